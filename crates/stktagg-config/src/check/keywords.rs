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
    "tune.max-pending",
    "peer",
    "from",
    "forward",
    "option",
    "no",
];

pub(super) fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
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
    fn distances() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("peer", "peer"), 0);
    }
}
