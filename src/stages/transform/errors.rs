//! What can go wrong with transforms: a file or reference table that cannot be loaded
//! (naming the file and line), a rule that is wrong (naming the rule), a rule that
//! fails on one record (which the validator dead-letters).

use std::path::PathBuf;

/// A transforms file or reference table could not be loaded: names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TransformLoadError {
    /// The file could not be read.
    #[error("transforms: cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid, or a rule is wrong.
    #[error("transforms: {path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A reference table could not be read.
    #[error("transforms: reference table {table}: {message}")]
    Reference {
        /// The table.
        table: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a rule of a transforms file is wrong.
#[derive(Debug, thiserror::Error)]
#[error("rule '{rule}': {problem}")]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// What is wrong with it.
    pub problem: RuleProblem,
}

/// What is wrong with a rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleProblem {
    /// No operation key.
    #[error("no operation: one of trim/case, map, rename, default, template, lookup")]
    NoOperation,
    /// More than one operation key.
    #[error("more than one operation: one rule does one of trim/case, map, rename, default, template, lookup")]
    ManyOperations,
    /// `rename` without `to`.
    #[error("rename needs `to` (the new name)")]
    RenameNeedsTo,
    /// `rename` with `field`.
    #[error("rename takes `to`, not `field`")]
    RenameTakesTo,
    /// No `field`.
    #[error("missing `field` (the field it writes)")]
    MissingField,
    /// `unmapped` or `missing` of another value.
    #[error("{key} = '{value}': one of keep, null, fail")]
    Otherwise {
        /// `unmapped` or `missing`.
        key: &'static str,
        /// What was given.
        value: String,
    },
    /// A TOML value with no JSON form.
    #[error("{0}")]
    Value(#[from] serde_json::Error),
    /// A template that names no field.
    #[error("template '{0}' names no field ({{field}})")]
    EmptyTemplate(String),
    /// A lookup of a column the table lacks.
    #[error("table '{table}' has no column '{column}' (it has {has})")]
    NoColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
        /// The columns it has, comma separated.
        has: String,
    },
    /// `case` of another value.
    #[error("case = '{0}': one of lower, upper, title")]
    Case(String),
    /// `type` of another value.
    #[error(
        "type = '{0}': one of string, integer, number, decimal2, boolean, date-time, date, json"
    )]
    Type(String),
    /// The lookup's table cannot be had.
    #[error(transparent)]
    Table(#[from] ReferenceError),
}

/// Why a reference table cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A path where a file name of `contracts/_reference/` belongs.
    #[error("table '{0}': a file name in contracts/_reference/")]
    NotAFileName(String),
    /// The CSV file cannot be read.
    #[error(transparent)]
    Unreadable(#[from] Box<TransformLoadError>),
    /// No table of that name.
    #[error("no table '{0}'")]
    Unknown(String),
}

/// Why a rule failed on a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleFailure {
    /// A strict map without the value.
    #[error("/payload/{field}: value '{value}' is not in the map")]
    NotInMap {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// A field the rule needs is absent.
    #[error("/payload/{field}: absent, the {needed_by} needs it")]
    Absent {
        /// The field.
        field: String,
        /// `template` or `lookup`.
        needed_by: &'static str,
    },
    /// A strict lookup without the row.
    #[error("/payload/{key}: '{value}' is not in {table}")]
    NotInTable {
        /// The key field.
        key: String,
        /// Its value.
        value: String,
        /// The table.
        table: String,
    },
}

/// A rule failed on a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("transform rule '{rule}': {message}")]
pub struct TransformFailed {
    /// The rule's name.
    pub rule: String,
    /// What went wrong.
    pub message: String,
}
