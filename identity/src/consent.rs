//! Which vendor-id categories an event's consent grants, in the tenant's own category names
//! (`context.consent.categoryPreferences`, as Segment's consent tools and `sluice.consent()`
//! send it).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::vendors::Category;

/// The tenant's names for the categories, and what an event without consent means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentNames {
    pub advertising: String,
    pub analytics: String,
    /// Whether an event that carries no consent at all grants every category (a site
    /// without a consent tool) or none.
    pub grant_without_consent: bool,
}

/// What an event's consent says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub granted: Vec<Category>,
    /// Explicitly denied: stored ids of these categories are deleted.
    pub revoked: Vec<Category>,
    /// The preferences as given, to keep on the profile.
    pub given: Option<BTreeMap<String, bool>>,
}

impl Decision {
    pub fn grants(&self, category: Category) -> bool {
        self.granted.contains(&category)
    }
}

/// Most preferences kept from one event.
const MAX_PREFERENCES: usize = 32;

impl ConsentNames {
    pub fn decide(&self, preferences: Option<&Map<String, Value>>) -> Decision {
        let categories = [
            (Category::Advertising, &self.advertising),
            (Category::Analytics, &self.analytics),
        ];
        let Some(preferences) = preferences else {
            return Decision {
                granted: if self.grant_without_consent {
                    categories.iter().map(|(c, _)| *c).collect()
                } else {
                    Vec::new()
                },
                ..Decision::default()
            };
        };
        let mut decision = Decision {
            given: Some(
                preferences
                    .iter()
                    .filter(|(name, _)| name.len() <= 64)
                    .filter_map(|(name, v)| v.as_bool().map(|b| (name.clone(), b)))
                    .take(MAX_PREFERENCES)
                    .collect(),
            ),
            ..Decision::default()
        };
        for (category, name) in categories {
            match preferences.get(name.as_str()).and_then(Value::as_bool) {
                Some(true) => decision.granted.push(category),
                Some(false) => decision.revoked.push(category),
                None => {}
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(grant: bool) -> ConsentNames {
        ConsentNames {
            advertising: "ads".into(),
            analytics: "analytics".into(),
            grant_without_consent: grant,
        }
    }

    #[test]
    fn consent_grants_denies_or_says_nothing() {
        let prefs = json!({"ads": false, "analytics": true, "other": "x"});
        let d = names(true).decide(prefs.as_object());
        assert_eq!(d.granted, vec![Category::Analytics]);
        assert_eq!(d.revoked, vec![Category::Advertising]);
        assert_eq!(d.given.expect("given").len(), 2);
        let silent = json!({"analytics": true});
        let d = names(true).decide(silent.as_object());
        assert!(!d.grants(Category::Advertising) && d.revoked.is_empty());
        assert_eq!(names(true).decide(None).granted.len(), 2);
        assert!(names(false).decide(None).granted.is_empty());
    }
}
