//! Remote-monitoring billing evidence (docs/billing.md): the rules as data ([`rules`]), a
//! patient's monthly statement ([`statement`]) and the biller's CSV ([`csv`]).

pub mod csv;
pub mod rules;
pub mod statement;

#[cfg(test)]
mod tests;

pub use rules::Rules;
pub use statement::{Inputs, Month, SetupEvent, Statement, days_needed, device_days, statement};
