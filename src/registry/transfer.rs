//! Moving a registry from SQLite to PostgreSQL (`vigil db migrate`): the rows as they travel
//! between the two backends, in no backend's types.
//!
//! PostgreSQL's tables keep SQLite's table and column names, so the move is by name: the source
//! reads each table the target has, in chunks of rows of plain values ([`Cell`]), and the target
//! converts each value to its column's type. Nothing is dropped silently: a source column the
//! target lacks, or a source table with rows the target does not know, stops the move before
//! anything is written.

/// One value as SQLite stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Some rows of one table, in the order the source keeps them (SQLite's rowid order, so the
/// audit trail arrives in chain order).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub table: String,
    /// The columns of each row, in the order of [`Chunk::rows`]' cells.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// A table of the target, as the source is asked to read it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub table: String,
    /// The target's columns; the source reads those it has.
    pub columns: Vec<String>,
}

/// How many rows were copied into one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: String,
    pub rows: u64,
}

/// Rows read and sent to the target at a time: bounded memory whatever the registry's size.
pub const CHUNK_ROWS: usize = 2_000;
