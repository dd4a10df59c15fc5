//! Alert rules and their evaluation: pure code, no I/O (the engine and its task arrive with
//! the rest of the alerting work).
//!
//! - [`rules`]: a patient's care plan — the rule kinds of the contract, parsed and validated
//!   so that `PUT /patients/{id}/care-plan` can refuse a bad rule with a reason.
//! - [`news2`]: the Royal College of Physicians' NEWS2 table (2017).

pub mod news2;
pub mod rules;
