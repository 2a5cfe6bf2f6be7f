//! Name patterns: a metric or agent given exactly or as a glob (`coordination.*`).

use crate::exit::{Exit, fail};

/// An exact name or a glob; `*` and `?` match any character including `.`.
#[derive(Clone, Debug)]
pub enum NamePattern {
    Exact(String),
    Glob(String, globset::GlobMatcher),
}

impl NamePattern {
    /// Parses `text`: a glob when it contains `*`, `?` or `[`, else an exact name.
    ///
    /// # Errors
    /// Exit 2 for an invalid glob.
    pub fn new(text: &str) -> anyhow::Result<Self> {
        if text.contains(['*', '?', '[']) {
            let glob = globset::GlobBuilder::new(text)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| fail(Exit::Usage, format!("invalid pattern {text:?}: {e}")))?;
            Ok(NamePattern::Glob(text.to_string(), glob.compile_matcher()))
        } else {
            Ok(NamePattern::Exact(text.to_string()))
        }
    }

    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(s) => s == name,
            NamePattern::Glob(_, m) => m.is_match(name),
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        match self {
            NamePattern::Exact(s) | NamePattern::Glob(s, _) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_cross_dots() {
        let p = NamePattern::new("coordination.*").unwrap();
        assert!(p.matches("coordination.time"));
        assert!(p.matches("coordination.a.b"));
        assert!(!p.matches("memory_usage_mb"));
        assert!(NamePattern::new("a.b").unwrap().matches("a.b"));
        assert!(!NamePattern::new("a.b").unwrap().matches("aXb"));
    }
}
