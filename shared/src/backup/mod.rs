//! Base backups: `walvault backup` streams PostgreSQL's base backup into
//! chunks that travel the WAL's road; `restore` and `drill` bring one back.

pub mod name;
