//! Alert rules and their evaluation.
//!
//! - [`rules`]: a patient's care plan — the rule kinds of the contract, parsed and validated
//!   so that `PUT /patients/{id}/care-plan` can refuse a bad rule with a reason — and the
//!   documented default plan.
//! - [`news2`]: the Royal College of Physicians' NEWS2 table (2017).
//! - [`news2_trend`]: NEWS2 at each step of a time grid from each parameter's charted series
//!   (the patient page's trend).
//! - [`programme_plans`]: the programme care plans shipped in `care-plans/` (the default plan
//!   plus each programme's trend rules, with their sources).
//! - [`trend`]: the trend rules' mathematics (`drift`, `macd`, `forecast`) and what they keep
//!   per patient: daily figures, a few recent glucose readings.
//! - [`engine`]: the pure state machine that turns committed readings and the passing of time
//!   into alert effects; it dispatches trend rules to [`trend`].
//! - [`words`]: alert messages in clinical language, in the clinic's display units.
//! - [`limits`]: the range a plan's threshold rules draw for each vital, for the dashboard to
//!   mark values outside it.
//!
//! It must never do I/O or read a clock in `rules`, `news2`, `news2_trend`, `limits`,
//! `programme_plans`, `trend`, `words` or `engine`: the shell that moves readings in and effects
//! out lives with the record, in [`crate::crm`].

pub mod engine;
pub mod limits;
pub mod news2;
pub mod news2_trend;
pub mod programme_plans;
pub mod rules;
pub mod trend;
pub mod words;
