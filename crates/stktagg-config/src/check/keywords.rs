//! The language's keywords: which words are known, and the one a typo was meant
//! to be.

/// Every keyword, for "did you mean" suggestions and to tell a misplaced keyword
/// from an unknown word.
const KEYWORDS: &[&str] = &[
    "global",
    "aggregations",
    "stats",
    "prometheus",
    "log-level",
    "timeout",
    "tune.heartbeat",
    "tune.reconnect-min",
    "tune.reconnect-max",
    "tune.max-message-size",
    "peer",
    "default-server",
    "from",
    "forward",
    "shards",
    "option",
    "no",
];

/// Keywords that are still recognised but do nothing, each with the reason given
/// in the warning. They are never suggested for a typo.
const OBSOLETE: &[(&str, &str)] = &[(
    "tune.max-pending",
    "changes waiting for a peer are kept once per key, so the number of keys \
     already bounds them; delete this line",
)];

/// Whether `word` is a keyword of the language, obsolete ones included.
pub(super) fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word) || obsolete(word).is_some()
}

/// Why `word` is an obsolete keyword, if it is one.
pub(super) fn obsolete(word: &str) -> Option<&'static str> {
    OBSOLETE
        .iter()
        .find(|(k, _)| *k == word)
        .map(|(_, why)| *why)
}

/// The known keyword closest to `word`, if it is close enough to be a typo.
pub(super) fn suggest(word: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .map(|k| (levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("pere"), Some("peer"));
        assert_eq!(suggest("froward"), Some("forward"));
        assert_eq!(suggest("zzzzzz"), None);
    }

    #[test]
    fn obsolete_keywords_are_known_but_never_suggested() {
        assert!(is_keyword("tune.max-pending"));
        assert!(obsolete("tune.max-pending").is_some());
        assert_eq!(obsolete("tune.max-message-size"), None);
        assert_eq!(suggest("tune.max-pendin"), None);
    }

    #[test]
    fn distances() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("peer", "peer"), 0);
    }
}
