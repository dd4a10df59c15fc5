//! Which care plan the alert engine judges a patient by, from what their record holds
//! (docs/alerts.md, "Programme care plans"): their own plan if a clinician set one; else, while
//! their latest enrollment episode has no end and its programme ships a plan, that plan; else
//! the default. A discharged patient is judged by no rule at all.
//!
//! One rule for every reader: the API and the engine ([`crate::crm::record`]) and, on
//! PostgreSQL, the notice a change writes for the engine in its own transaction
//! ([`crate::registry::record::EngineNotice::PlanChanged`]).

use crate::alerts::programme_plans::programme_plan;
use crate::alerts::rules::CarePlan;

/// Which care plan a patient is judged by.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanInForce {
    /// Their own, set by a clinician.
    Own(CarePlan),
    /// Their programme's, as shipped.
    Programme { id: &'static str, plan: CarePlan },
    /// The documented default plan.
    Default,
}

impl PlanInForce {
    /// From the patient's own plan and the programme of their latest enrollment episode if it
    /// has no end.
    pub fn of(own: Option<CarePlan>, open_programme: Option<&str>) -> PlanInForce {
        if let Some(own) = own {
            return PlanInForce::Own(own);
        }
        open_programme
            .and_then(programme_plan)
            .map_or(PlanInForce::Default, |p| PlanInForce::Programme {
                id: p.id,
                plan: p.plan.clone(),
            })
    }

    /// The plan for the engine: `None` for the default.
    pub fn into_plan(self) -> Option<CarePlan> {
        match self {
            PlanInForce::Own(p) | PlanInForce::Programme { plan: p, .. } => Some(p),
            PlanInForce::Default => None,
        }
    }

    /// The plan for the engine of a patient who is `discharged` or not: an empty plan while
    /// they are (no rule watches them), else [`PlanInForce::into_plan`].
    pub fn for_engine(self, discharged: bool) -> Option<CarePlan> {
        if discharged {
            Some(CarePlan { rules: Vec::new() })
        } else {
            self.into_plan()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_over_programme_over_default_and_nothing_while_discharged() {
        let own = CarePlan { rules: Vec::new() };
        assert_eq!(
            PlanInForce::of(Some(own.clone()), Some("hypertension")),
            PlanInForce::Own(own)
        );
        let programme = programme_plan("hypertension").expect("a shipped plan");
        assert_eq!(
            PlanInForce::of(None, Some("hypertension")),
            PlanInForce::Programme {
                id: programme.id,
                plan: programme.plan.clone()
            }
        );
        assert_eq!(
            PlanInForce::of(None, Some("no-such-programme")),
            PlanInForce::Default
        );
        assert_eq!(PlanInForce::of(None, None).for_engine(false), None);
        assert_eq!(
            PlanInForce::of(None, Some("hypertension")).for_engine(true),
            Some(CarePlan { rules: Vec::new() })
        );
    }
}
