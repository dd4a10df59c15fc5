//! The programme care plans Vigil ships (`care-plans/*.json`, docs/alerts.md "Programme care
//! plans"): each is the default plan's rules followed by the programme's trend rules, with the
//! sources they rest on. A patient enrolled in a programme of the same id, with no plan of
//! their own, is judged by it (`crm::record`); `GET /care-plans` lists them, so that a
//! clinician can also give one to a patient with `PUT /patients/{id}/care-plan`.

use serde::Serialize;

use super::rules::CarePlan;

/// A shipped plan.
#[derive(Debug, Clone, Serialize)]
pub struct ProgrammePlan {
    /// The file's name without `.json` (`heart-failure`).
    pub id: &'static str,
    /// In words.
    pub name: &'static str,
    /// What the trend rules added to the default plan rest on (docs/alerts.md).
    pub sources: &'static str,
    pub plan: CarePlan,
}

/// The shipped plans, as (id, name, sources, JSON).
const SHIPPED: [(&str, &str, &str, &str); 4] = [
    (
        "heart-failure",
        "Heart failure",
        "ESC 2021 and HFA 2021 (weight gain over 3 days); Zhang et al. 2009 and Chaudhry et al. \
         2007 (gradual weight gain); Moazeni et al. 2023 (resting heart rate against a personal \
         baseline)",
        include_str!("../../care-plans/heart-failure.json"),
    ),
    (
        "hypertension",
        "Hypertension",
        "ESH home blood-pressure monitoring: Parati et al. 2021; Stergiou et al. 2021",
        include_str!("../../care-plans/hypertension.json"),
    ),
    (
        "diabetes",
        "Diabetes",
        "Nightscout AR2 forecast; ADA level 1 hypoglycaemia; Battelino et al. 2019",
        include_str!("../../care-plans/diabetes.json"),
    ),
    (
        "copd",
        "COPD",
        "Hurst et al. 2010; Al Rajeh et al. 2020",
        include_str!("../../care-plans/copd.json"),
    ),
];

/// Every shipped plan, parsed once. Each is checked by this module's test, so a plan that
/// does not parse never ships; should one not parse all the same, it is left out.
pub fn programme_plans() -> &'static [ProgrammePlan] {
    static PLANS: std::sync::LazyLock<Vec<ProgrammePlan>> = std::sync::LazyLock::new(parse_all);
    &PLANS
}

/// The shipped plan of programme `id` (the four built-in programmes have one each).
pub fn programme_plan(id: &str) -> Option<&'static ProgrammePlan> {
    programme_plans().iter().find(|p| p.id == id)
}

fn parse_all() -> Vec<ProgrammePlan> {
    SHIPPED
        .iter()
        .filter_map(|(id, name, sources, json)| {
            Some(ProgrammePlan {
                id,
                name,
                sources,
                plan: CarePlan::parse(json.as_bytes()).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_plan_parses_and_ids_are_distinct() {
        let plans = programme_plans();
        assert_eq!(plans.len(), SHIPPED.len());
        let mut ids: Vec<&str> = plans.iter().map(|p| p.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), SHIPPED.len());
        assert!(plans.iter().all(|p| !p.plan.rules.is_empty()));
        // The built-in programmes each have theirs.
        for (id, _) in crate::registry::enrollment::BUILT_IN {
            assert_eq!(programme_plan(id).map(|p| p.id), Some(id));
        }
        assert!(programme_plan("east").is_none());
    }
}
