//! "Did you mean …?": the word of a known set a slip was probably meant to be, for messages
//! that name a misspelt unit, severity or flag value.

/// Levenshtein distance, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The candidate nearest `word` (case aside) when it is at most one edit away for words of
/// up to four letters, two for longer ones, and not `word` itself; the first of equals.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let max = if lower.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, c), c))
        .filter(|(d, _)| (1..=max).contains(d))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_word_within_reach_is_suggested() {
        assert_eq!(edit_distance("warnig", "warning"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        let sev = ["critical", "error", "warning", "info"];
        assert_eq!(closest("warnig", sev), Some("warning"));
        assert_eq!(closest("CRITCAL", sev), Some("critical"));
        assert_eq!(closest("inf", sev), Some("info"));
        assert_eq!(closest("warning", sev), None, "itself");
        assert_eq!(closest("slow", sev), None);
    }
}
