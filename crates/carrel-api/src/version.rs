//! API versions: what the server speaks, and the version of each request.

use crate::error::ApiError;

/// The newest API version served (the docker CLI 28.2.2's).
pub const MAX_VERSION: ApiVersion = ApiVersion(1, 50);

/// The oldest API version served.
pub const MIN_VERSION: ApiVersion = ApiVersion(1, 24);

/// An API version `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    /// Parse `1.41`.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.split_once('.')?;
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }

    /// Whether this request's version is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ApiVersion(major, minor)
    }
}

/// Split `/v1.41/volumes` into the version and `/volumes`; an unprefixed path has the newest
/// version. A version outside the served range is Docker's error (400).
pub fn split_path(path: &str) -> Result<(ApiVersion, &str), ApiError> {
    if let Some(rest) = path.strip_prefix("/v") {
        let (ver, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !ver.is_empty() && ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let Some(v) = ApiVersion::parse(ver) else {
                return Err(ApiError::bad_request(format!("invalid API version: {ver}")));
            };
            if v > MAX_VERSION {
                return Err(ApiError::bad_request(format!(
                    "client version {v} is too new. Maximum supported API version is {MAX_VERSION}"
                )));
            }
            if v < MIN_VERSION {
                return Err(ApiError::bad_request(format!(
                    "client version {v} is too old. Minimum supported API version is {MIN_VERSION}, please upgrade your client to a newer version"
                )));
            }
            return Ok((v, tail));
        }
    }
    Ok((MAX_VERSION, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/v1.41/volumes").unwrap(),
            (ApiVersion(1, 41), "/volumes")
        );
        assert_eq!(split_path("/volumes").unwrap(), (MAX_VERSION, "/volumes"));
        assert_eq!(split_path("/_ping").unwrap(), (MAX_VERSION, "/_ping"));
        assert_eq!(
            split_path("/v1.51/info").unwrap_err().message,
            "client version 1.51 is too new. Maximum supported API version is 1.50"
        );
        assert_eq!(
            split_path("/v1.20/info").unwrap_err().message,
            "client version 1.20 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"
        );
        // Not a version: a path like any other.
        assert_eq!(split_path("/volumes/v1").unwrap().1, "/volumes/v1");
        assert!(ApiVersion(1, 42).at_least(1, 42));
        assert!(!ApiVersion(1, 41).at_least(1, 42));
    }
}
