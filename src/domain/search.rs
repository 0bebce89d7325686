//! Search words: what a client typed, reduced to words the FULLTEXT index can find.
//!
//! Every character that is not a letter or digit separates words, so `%`, `_`, `*`, `+`, `-`,
//! `"`, `@`, `(` and `)` can never act as LIKE or boolean-mode operators. Words the index does not
//! hold (shorter than `innodb_ft_min_token_size` = 3, or InnoDB stopwords) are dropped, because
//! they would match nothing; a search left with no word is a client mistake, never "everything".

/// InnoDB's default FULLTEXT stopword list (`INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD`).
const STOPWORDS: [&str; 36] = [
    "a", "about", "an", "are", "as", "at", "be", "by", "com", "de", "en", "for", "from", "how",
    "i", "in", "is", "it", "la", "of", "on", "or", "that", "the", "this", "to", "was", "what",
    "when", "where", "who", "will", "with", "und", "the", "www",
];

/// The shortest word InnoDB indexes (`innodb_ft_min_token_size`).
pub const MIN_WORD_CHARS: usize = 3;
/// The most characters a `search` value may have.
pub const MAX_SEARCH_CHARS: usize = 100;
/// The most words a `search` value may have.
pub const MAX_SEARCH_WORDS: usize = 8;

/// Normalised search words: lowercase, deduplicated, in first-seen order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchTerms {
    words: Vec<String>,
}

/// Why a `search` value is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("must be at most {MAX_SEARCH_CHARS} characters")]
    TooLong,
    #[error("must have at most {MAX_SEARCH_WORDS} words")]
    TooManyWords,
    #[error("has no searchable word (words need at least {MIN_WORD_CHARS} letters or digits and must not be stopwords)")]
    NothingSearchable,
}

impl SearchTerms {
    /// Returns `Ok(None)` for an empty or all-space value (absent), the terms otherwise.
    pub fn parse(text: &str) -> Result<Option<SearchTerms>, SearchError> {
        if text.chars().count() > MAX_SEARCH_CHARS {
            return Err(SearchError::TooLong);
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Lowercase before splitting: lowercasing can itself produce separators (`İ` becomes `i`
        // and a combining dot), and splitting first would make the canonical form re-parse
        // differently (found by fuzzing).
        let lowercase = text.to_lowercase();
        let raw_words: Vec<&str> = lowercase
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
            .collect();
        if raw_words.len() > MAX_SEARCH_WORDS {
            return Err(SearchError::TooManyWords);
        }
        let mut words: Vec<String> = Vec::with_capacity(raw_words.len());
        for word in raw_words {
            if word.chars().count() < MIN_WORD_CHARS || STOPWORDS.contains(&word) {
                continue;
            }
            if !words.iter().any(|known| known == word) {
                words.push(word.to_owned());
            }
        }
        if words.is_empty() {
            return Err(SearchError::NothingSearchable);
        }
        Ok(Some(SearchTerms { words }))
    }

    #[must_use]
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The boolean-mode expression: every word required, each also as a prefix (`+lamp* +oak*`).
    /// Words hold only letters and digits, so nothing in it is an operator but ours.
    /// The same condition as [`Self::boolean_mode_expression`] as one regular expression over
    /// `CONCAT_WS(' ', name, description)`: every word at a word start, in any order
    /// (`^(?=[\s\S]*\bclassic)(?=[\s\S]*\boak)`). Lookaheads and `\b` mean the same in
    /// MySQL 8 (ICU) and MariaDB (PCRE2, Unicode-aware); words are letters and digits only, so
    /// nothing in them is a regex operator.
    #[must_use]
    pub fn word_start_pattern(&self) -> String {
        let mut pattern =
            String::with_capacity(1 + self.words.iter().map(|w| w.len() + 14).sum::<usize>());
        pattern.push('^');
        for word in &self.words {
            pattern.push_str("(?=[\\s\\S]*\\b");
            pattern.push_str(word);
            pattern.push(')');
        }
        pattern
    }

    /// A `LIKE` pattern every match satisfies: the longest word anywhere (`%walnut%`); the most
    /// selective cheap test before the regular expression. Words hold no `%` or `_`.
    #[must_use]
    pub fn substring_pattern(&self) -> String {
        let longest = self
            .words
            .iter()
            .max_by_key(|word| word.chars().count())
            .map_or("", String::as_str);
        format!("%{longest}%")
    }

    #[must_use]
    pub fn boolean_mode_expression(&self) -> String {
        let mut expression = String::with_capacity(self.words.iter().map(|w| w.len() + 3).sum());
        for word in &self.words {
            if !expression.is_empty() {
                expression.push(' ');
            }
            expression.push('+');
            expression.push_str(word);
            expression.push('*');
        }
        expression
    }

    /// The normalised words joined by single spaces, for cache keys, cursors and links.
    #[must_use]
    pub fn canonical(&self) -> String {
        self.words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_start_pattern_requires_every_word_at_a_word_start() {
        let terms = SearchTerms::parse("Classic oak").unwrap().unwrap();
        assert_eq!(
            terms.word_start_pattern(),
            r"^(?=[\s\S]*\bclassic)(?=[\s\S]*\boak)"
        );
        assert_eq!(terms.substring_pattern(), "%classic%");
    }

    fn words(text: &str) -> Result<Option<Vec<String>>, SearchError> {
        SearchTerms::parse(text).map(|terms| terms.map(|t| t.words().to_vec()))
    }

    #[test]
    fn splits_lowercases_and_drops_unsearchable_words() {
        type Expected = Result<Option<Vec<&'static str>>, SearchError>;
        let cases: [(&str, Expected); 10] = [
            ("", Ok(None)),
            ("   ", Ok(None)),
            ("Lamp", Ok(Some(vec!["lamp"]))),
            ("oak  LAMP oak", Ok(Some(vec!["oak", "lamp"]))),
            ("%lamp_oak%", Ok(Some(vec!["lamp", "oak"]))),
            (
                "+lamp -oak \"x\" @3 (wood*)",
                Ok(Some(vec!["lamp", "oak", "wood"])),
            ),
            ("the of to", Err(SearchError::NothingSearchable)),
            ("%%% ___ **", Err(SearchError::NothingSearchable)),
            ("a b c d e f g h i", Err(SearchError::TooManyWords)),
            ("Crème brûlée", Ok(Some(vec!["crème", "brûlée"]))),
        ];
        for (text, expected) in cases {
            let expected = expected.map(|o| o.map(|v| v.into_iter().map(String::from).collect()));
            assert_eq!(words(text), expected, "{text:?}");
        }
    }

    #[test]
    fn the_canonical_form_parses_to_the_same_words() {
        // Regression found by fuzzing: `İ` lowercases to `i` + U+0307.
        for text in ["İstanbul", "ǅemal Straße", "ΣΟΦΙΑ lamp"] {
            let terms = SearchTerms::parse(text).unwrap().unwrap();
            let again = SearchTerms::parse(&terms.canonical()).unwrap().unwrap();
            assert_eq!(terms, again, "{text}");
        }
    }

    #[test]
    fn rejects_values_over_the_length_limit() {
        assert_eq!(words(&"x".repeat(101)), Err(SearchError::TooLong));
        assert!(words(&"x".repeat(100)).is_ok());
    }

    #[test]
    fn boolean_expression_requires_every_word_as_prefix() {
        let terms = SearchTerms::parse("Oak lamp").unwrap().unwrap();
        assert_eq!(terms.boolean_mode_expression(), "+oak* +lamp*");
        assert_eq!(terms.canonical(), "oak lamp");
    }
}
