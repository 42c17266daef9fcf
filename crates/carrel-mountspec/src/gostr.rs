//! Go standard-library string and path helpers whose exact behaviour Docker's messages and
//! normalization depend on: `strconv.Quote`, `path.Clean`, `path.IsAbs`, `filepath.Abs` and
//! `filepath.IsLocal` (Unix flavours).

/// Go's `strconv.Quote` (what `%q` prints for a string): double quotes, Go escapes for
/// backslash, quote and non-printable characters.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `path.IsAbs`: the path starts with `/`.
pub fn is_abs(p: &str) -> bool {
    p.starts_with('/')
}

/// Go's `path.Clean`: the shortest lexically equivalent path (`//a/./b/../c/` → `/a/c`,
/// `/..` → `/`, `""` → `.`).
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Abs` against an explicit working directory: `clean(cwd/p)` for relative `p`.
pub fn abs(cwd: &str, p: &str) -> String {
    if is_abs(p) {
        clean(p)
    } else {
        clean(&format!("{cwd}/{p}"))
    }
}

/// Go's `filepath.IsLocal` (Unix): not empty, not absolute, and does not leave its base through
/// `..` once cleaned.
pub fn is_local(p: &str) -> bool {
    if is_abs(p) || p.is_empty() {
        return false;
    }
    let has_dots = p.split('/').any(|part| part == "." || part == "..");
    let p = if has_dots { clean(p) } else { p.to_string() };
    !(p == ".." || p.starts_with("../"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        let cases = [
            ("", "."),
            ("/", "/"),
            ("//", "/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/../..", "/"),
            ("/data/", "/data"),
            ("/a/../b", "/b"),
            ("//srv//data/", "/srv/data"),
            ("/data//sub/../x/", "/data/x"),
            ("a/../..", ".."),
            ("../", ".."),
            ("./a/./b/", "a/b"),
            ("x:/data", "x:/data"),
            ("abc/../../x", "../x"),
            ("\\data", "\\data"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn abs_and_local() {
        assert_eq!(abs("/home/user/proj", "."), "/home/user/proj");
        assert_eq!(abs("/home/user/proj", "./"), "/home/user/proj");
        assert_eq!(abs("/home/user/proj", ".."), "/home/user");
        assert_eq!(abs("/home/user/proj", "../other"), "/home/user/other");
        assert_eq!(abs("/home/user/proj", ".cache"), "/home/user/proj/.cache");
        assert_eq!(abs("/x", "/a/../b"), "/b");
        assert!(is_local("app1"));
        assert!(is_local("a/b/../c"));
        assert!(is_local("."));
        assert!(!is_local(""));
        assert!(!is_local("/foo"));
        assert!(!is_local(".."));
        assert!(!is_local("a/../../b"));
        assert!(!is_local("../x"));
    }

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("my vol"), "\"my vol\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote("a\nb\u{0}"), "\"a\\nb\\x00\"");
        assert_eq!(quote("é"), "\"é\"");
    }
}
