//! Where diagnostics go: every error and warning is collected here with the line
//! it quotes, and none stops the walk. Also the positions a diagnostic points at
//! when the token it is about is missing.

use std::sync::Arc;

use crate::ast::{Aggregations, Config, Global};
use crate::error::{ConfigError, ConfigErrors, ErrorKind, Location, Span, Warning, WarningKind};
use crate::syntax::{Line, Tok};

/// Every error and warning found so far, in the order found; they are sorted by
/// position only at the end, so that equal positions keep that order.
pub(super) struct Diagnostics {
    file: Arc<str>,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Diagnostics {
    pub(super) fn new(file: &str) -> Self {
        Self {
            file: Arc::from(file),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The position of column `col` of line `line` in this file.
    pub(super) fn span(&self, line: u32, col: u32) -> Span {
        Span {
            file: Arc::clone(&self.file),
            line,
            column: col,
        }
    }

    pub(super) fn location(
        &self,
        line: u32,
        text: &str,
        col: u32,
        width: u32,
        note: Option<String>,
    ) -> Location {
        Location {
            span: self.span(line, col),
            width,
            line_text: text.to_owned(),
            note,
        }
    }

    /// How many errors were reported so far.
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub(super) fn error(&mut self, kind: ErrorKind, location: Location) {
        self.errors.push(ConfigError { kind, location });
    }

    pub(super) fn error_at(&mut self, line: u32, text: &str, tok: &Tok, kind: ErrorKind) {
        self.error_note(line, text, tok, kind, None);
    }

    pub(super) fn error_note(
        &mut self,
        line: u32,
        text: &str,
        tok: &Tok,
        kind: ErrorKind,
        note: Option<String>,
    ) {
        let location = self.location(line, text, tok.col, tok.width, note);
        self.error(kind, location);
    }

    pub(super) fn warn_at(&mut self, line: u32, text: &str, tok: &Tok, kind: WarningKind) {
        let location = self.location(line, text, tok.col, tok.width, None);
        self.warnings.push(Warning { kind, location });
    }

    /// Reports that `keyword` lacks `what`, at the end of the line.
    pub(super) fn missing(&mut self, line: &Line, keyword: &'static str, what: &'static str) {
        self.error_at(
            line.number,
            &line.text,
            &end_of(&line.text),
            ErrorKind::MissingArgument { keyword, what },
        );
    }

    /// The configuration if nothing was wrong, every error otherwise; warnings
    /// either way. Both lists in file order.
    pub(super) fn finish(
        mut self,
        global: Global,
        sections: Vec<Aggregations>,
    ) -> Result<Config, ConfigErrors> {
        self.errors
            .sort_by_key(|e| (e.location.span.line, e.location.span.column));
        self.warnings
            .sort_by_key(|w| (w.location.span.line, w.location.span.column));
        if self.errors.is_empty() {
            Ok(Config {
                global,
                sections,
                warnings: self.warnings,
            })
        } else {
            Err(ConfigErrors {
                errors: self.errors,
                warnings: self.warnings,
            })
        }
    }
}

/// The column just after a line's last non-blank character, where a missing
/// argument would go.
pub(super) fn end_of(text: &str) -> Tok {
    let code = text.split('#').next().unwrap_or("");
    let len = code.trim_end().chars().count();
    Tok {
        text: String::new(),
        col: u32::try_from(len + 2).unwrap_or(u32::MAX),
        width: 1,
    }
}

/// The column just after `tok`, where its missing value would go.
pub(super) fn end_of_tok(tok: &Tok) -> Tok {
    Tok {
        text: String::new(),
        col: tok.col + tok.width + 1,
        width: 1,
    }
}

/// The first word of a section header, which whole-section diagnostics point at.
pub(super) fn header_tok(text: &str) -> Tok {
    let word = text.split([' ', '\t', '#']).next().unwrap_or("");
    Tok {
        text: word.to_owned(),
        col: 1,
        width: u32::try_from(word.chars().count().max(1)).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_argument_goes_after_the_last_word_before_a_comment() {
        assert_eq!(end_of("  peer   # who?").col, 8);
        assert_eq!(end_of("  from .a to").col, 14);
        assert_eq!(end_of("").col, 2);
    }

    #[test]
    fn errors_come_out_in_file_order_and_keep_their_order_on_one_column() {
        let mut d = Diagnostics::new("f.cfg");
        let at = |col| Tok {
            text: "x".to_owned(),
            col,
            width: 1,
        };
        d.error_at(3, "c", &at(1), ErrorKind::TwoFromAny);
        d.error_at(1, "a", &at(5), ErrorKind::ReconnectRange);
        d.error_at(1, "a", &at(5), ErrorKind::TwoFromAny);
        d.error_at(1, "a", &at(2), ErrorKind::NotUtf8);
        let kinds: Vec<ErrorKind> = d
            .finish(Global::default(), Vec::new())
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                ErrorKind::NotUtf8,
                ErrorKind::ReconnectRange,
                ErrorKind::TwoFromAny,
                ErrorKind::TwoFromAny
            ]
        );
    }
}
