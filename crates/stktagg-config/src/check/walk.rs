//! The walk over the lines: which section each line is in, headers and lines
//! that are in the wrong place, and which module checks the rest. At the end, the
//! rules that need the whole file.

use super::diag::{Diagnostics, end_of};
use super::global::GlobalBuilder;
use super::keywords::{is_keyword, suggest};
use super::rules::{finish_section, listeners, reconnect_range};
use super::sections::SectionBuilder;
use super::tokens::check_name;
use crate::ast::Config;
use crate::error::{ConfigErrors, ErrorKind};
use crate::syntax::{Line, Stmt, SyntaxError, Tok};

/// Which section we are in while walking the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// Before any header.
    None,
    /// In `global`.
    Global,
    /// In the n-th `aggregations` section.
    Aggr(usize),
    /// In a section we did not recognise; its lines were reported with it.
    Unknown,
}

/// Everything read so far.
pub(super) struct Walk {
    c: Diagnostics,
    global: GlobalBuilder,
    sections: Vec<SectionBuilder>,
    current: Current,
}

impl Walk {
    /// A walk over the file named `file` in diagnostics.
    pub(super) fn new(file: &str) -> Self {
        Self {
            c: Diagnostics::new(file),
            global: GlobalBuilder::new(),
            sections: Vec::new(),
            current: Current::None,
        }
    }

    /// The next line, parsed or not.
    pub(super) fn line(&mut self, parsed: Result<Line, Box<SyntaxError>>) {
        let line = match parsed {
            Ok(line) => line,
            Err(e) => return self.syntax_error(*e),
        };
        let kw = line.keyword.clone().unwrap_or_else(|| end_of(&line.text));
        match &line.stmt {
            Stmt::Blank => {}
            Stmt::GlobalHeader => {
                self.current = Current::Global;
                self.global.header(&self.c, line.number);
            }
            Stmt::AggregationsHeader { name } => self.aggregations_header(&line, name.as_ref()),
            Stmt::UnknownSection => self.unknown_section(&line, &kw),
            Stmt::UnknownKeyword => self.unknown_keyword(&line, &kw),
            _ => self.statement(&line, &kw),
        }
    }

    /// A line the grammar rejected. It still counts as an attempt at a rule or a
    /// local peer, so that the section is not also said to lack one.
    fn syntax_error(&mut self, e: SyntaxError) {
        if let Some(s) = self.section_mut() {
            s.note_attempt(&e.text);
        }
        let usage = e.usage.map(str::to_owned);
        let location = self.c.location(e.number, &e.text, e.col, e.width, usage);
        self.c.error(e.kind, location);
    }

    fn aggregations_header(&mut self, line: &Line, name: Option<&Tok>) {
        let (n, t) = (line.number, line.text.as_str());
        let name = match name {
            Some(tok) => {
                check_name(&mut self.c, line, tok, "section name");
                if let Some(first) = self.sections.iter().find(|s| s.name == tok.text) {
                    let note = format!("first declared at line {}", first.header_line);
                    let kind = ErrorKind::DuplicateSection {
                        name: tok.text.clone(),
                    };
                    self.c.error_note(n, t, tok, kind, Some(note));
                }
                tok.text.clone()
            }
            None => {
                self.c
                    .error_at(n, t, &end_of(t), ErrorKind::MissingSectionName);
                String::new()
            }
        };
        let span = self.c.span(n, 1);
        self.sections.push(SectionBuilder::new(name, n, t, span));
        self.current = Current::Aggr(self.sections.len() - 1);
    }

    /// A word at column 0 that is no section header.
    fn unknown_section(&mut self, line: &Line, kw: &Tok) {
        let misplaced_keyword = is_keyword(&kw.text);
        let kind = if misplaced_keyword {
            ErrorKind::KeywordNotIndented {
                keyword: kw.text.clone(),
            }
        } else {
            ErrorKind::UnknownSection {
                name: kw.text.clone(),
            }
        };
        self.c.error_at(line.number, &line.text, kw, kind);
        // The lines of an unknown section would only repeat the same mistake; a
        // misplaced keyword does not end the section it was meant for.
        if !misplaced_keyword {
            self.current = Current::Unknown;
        }
    }

    /// An indented word that is no keyword.
    fn unknown_keyword(&mut self, line: &Line, kw: &Tok) {
        if self.current == Current::Unknown {
            return;
        }
        let kind = if kw.text == "global" || kw.text == "aggregations" {
            ErrorKind::SectionIndented {
                keyword: kw.text.clone(),
            }
        } else {
            ErrorKind::UnknownKeyword {
                keyword: kw.text.clone(),
                suggestion: suggest(&kw.text),
            }
        };
        self.c.error_at(line.number, &line.text, kw, kind);
    }

    /// A keyword line: checked by its section, or reported if it is in the
    /// wrong one.
    fn statement(&mut self, line: &Line, kw: &Tok) {
        let (n, t) = (line.number, line.text.as_str());
        let keyword = kw.text.clone();
        let kind = match (self.current, is_global(&line.stmt)) {
            (Current::Unknown, _) => return,
            (Current::Global, true) => return self.global.stmt(&mut self.c, line, kw),
            (Current::Aggr(i), false) => {
                if let Some(s) = self.sections.get_mut(i) {
                    s.stmt(&mut self.c, line, kw);
                }
                return;
            }
            (Current::None, _) => ErrorKind::OutsideSection { keyword },
            (Current::Global, false) => ErrorKind::WrongSection {
                keyword,
                section: "global".to_owned(),
                allowed: "aggregations",
            },
            (Current::Aggr(i), true) => {
                let name = self.sections.get(i).map(|s| s.name.as_str());
                ErrorKind::WrongSection {
                    keyword,
                    section: format!("aggregations {}", name.unwrap_or_default()),
                    allowed: "global",
                }
            }
        };
        self.c.error_at(n, t, kw, kind);
    }

    fn section_mut(&mut self) -> Option<&mut SectionBuilder> {
        match self.current {
            Current::Aggr(i) => self.sections.get_mut(i),
            _ => None,
        }
    }

    /// Runs the rules that need the whole file and returns the result.
    pub(super) fn finish(mut self) -> Result<Config, ConfigErrors> {
        let g = &self.global;
        reconnect_range(&mut self.c, &g.global, g.reconnect_line.as_ref());
        listeners(&mut self.c, &self.sections);
        let sections = self
            .sections
            .into_iter()
            .map(|s| finish_section(&mut self.c, s))
            .collect();
        self.c.finish(self.global.global, sections)
    }
}

/// Whether a statement belongs in `global` (otherwise in `aggregations`).
fn is_global(stmt: &Stmt) -> bool {
    matches!(
        stmt,
        Stmt::StatsSocket { .. }
            | Stmt::Prometheus { .. }
            | Stmt::LogLevel { .. }
            | Stmt::Timeout { .. }
            | Stmt::Tune { .. }
    )
}
