//! Container names: Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`) and generated names in Docker's
//! `adjective_surname` form.

use rand::RngExt as _;

/// Adjectives for generated names.
const ADJECTIVES: &[&str] = &[
    "able", "agile", "amber", "ample", "arched", "ardent", "atomic", "azure", "bold", "brave",
    "breezy", "bright", "brisk", "calm", "candid", "careful", "cheerful", "civic", "clever",
    "cosmic", "crisp", "curious", "dapper", "daring", "deft", "devoted", "diligent", "eager",
    "earnest", "elated", "elegant", "epic", "fair", "fearless", "fervent", "festive", "fluent",
    "focused", "frank", "friendly", "gallant", "gentle", "gifted", "glad", "golden", "graceful",
    "hardy", "hearty", "helpful", "honest", "hopeful", "humble", "jolly", "jovial", "keen", "kind",
    "lively", "loyal", "lucid", "lucky", "merry", "mindful", "modest", "nimble", "noble",
    "patient", "placid", "plucky", "polite", "precise", "proud", "quick", "quiet", "radiant",
    "ready", "resolute", "robust", "serene", "sharp", "sincere", "smart", "snappy", "sober",
    "solid", "spry", "stable", "steady", "sturdy", "sunny", "swift", "tender", "thrifty", "tidy",
    "tranquil", "trusty", "upbeat", "valiant", "vibrant", "vivid", "warm", "wise", "witty",
    "zealous",
];

/// Surnames of people who shaped computing and storage, for generated names.
const SURNAMES: &[&str] = &[
    "allen",
    "babbage",
    "backus",
    "bartik",
    "bell",
    "berners",
    "borg",
    "brooks",
    "cerf",
    "codd",
    "conway",
    "corbato",
    "cray",
    "dahl",
    "dijkstra",
    "easley",
    "eckert",
    "elion",
    "engelbart",
    "estrin",
    "feinler",
    "floyd",
    "forsythe",
    "franklin",
    "gates",
    "goldberg",
    "goldwasser",
    "gray",
    "hamilton",
    "hamming",
    "hartree",
    "hoare",
    "holberton",
    "hollerith",
    "hopper",
    "huffman",
    "iverson",
    "jennings",
    "johnson",
    "kahan",
    "kay",
    "keller",
    "kernighan",
    "kilburn",
    "knuth",
    "kwolek",
    "lamport",
    "lamarr",
    "liskov",
    "lovelace",
    "mauchly",
    "mccarthy",
    "mcilroy",
    "mckusick",
    "meltzer",
    "minsky",
    "moore",
    "morris",
    "naur",
    "neumann",
    "noyce",
    "nygaard",
    "ousterhout",
    "pike",
    "postel",
    "rejewski",
    "ritchie",
    "rivest",
    "sammet",
    "shamir",
    "shannon",
    "shaw",
    "simon",
    "spencer",
    "stonebraker",
    "stroustrup",
    "sutherland",
    "tanenbaum",
    "tarjan",
    "teitelman",
    "thompson",
    "torvalds",
    "turing",
    "valiant",
    "wheeler",
    "wilkes",
    "wirth",
    "wozniak",
    "yao",
    "zuse",
];

/// True when `name` (without a leading `/`) is a valid container name.
pub fn is_valid(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A random `adjective_surname`; after `retry` collisions a digit is appended, as Docker does.
pub fn generate(retry: usize) -> String {
    let mut rng = rand::rng();
    let adj = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let name = SURNAMES[rng.random_range(0..SURNAMES.len())];
    if retry > 0 {
        format!("{adj}_{name}{}", rng.random_range(0..10))
    } else {
        format!("{adj}_{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_name_rule() {
        for ok in ["ab", "a1", "web.1", "db_primary", "x-y", "0abc"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "a", "_ab", ".ab", "-ab", "a b", "a/b", "a:b", "ünï"] {
            assert!(!is_valid(bad), "{bad}");
        }
        for _ in 0..100 {
            assert!(is_valid(&generate(0)));
            assert!(is_valid(&generate(3)));
        }
    }
}
