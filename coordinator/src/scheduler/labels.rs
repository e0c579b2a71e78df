//! Trust labels: what an operator vouches for about an agent (`trust=deploy`,
//! `rack=b3`), and the selectors pools place by.
//!
//! Trust labels are set on the coordinator only: copied from the join token
//! at enrollment, changed by `agent label set/rm` (`admin/actions.rs`).
//! Labels an agent reports about itself (`inventory.labels`) are a claim,
//! like its hardware, and never count here: the fleet keeps them apart
//! (`fleet/registry.rs`), and only trust labels reach the scheduler.
//!
//! A pool with an `agent_selector` is placed only on agents whose trust
//! labels contain every pair of the selector (`placement.rs`), whatever
//! hardware they claim.
//!
//! Spelling, checked wherever labels come in (token create, label set,
//! pool config): a key is 1-63 characters of `[A-Za-z0-9._/-]`, a value 1-63
//! characters of `[A-Za-z0-9._-]`; both start and end with a letter or
//! digit. An agent has at most [`MAX_LABELS`] trust labels.

use std::collections::BTreeMap;
use std::fmt;

/// Labels as key → value, ordered by key.
pub type Labels = BTreeMap<String, String>;

/// Most trust labels on one agent, and most pairs in one selector.
pub const MAX_LABELS: usize = 32;
/// Longest key, and longest value.
pub const MAX_LABEL_LEN: usize = 63;

/// A label that is not acceptable; the message names it and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError(pub String);

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabelError {}

fn well_formed(s: &str, extra: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=MAX_LABEL_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        && edge(s.chars().next())
        && edge(s.chars().last())
}

/// Escaped for a message: control characters and quotes cannot forge text.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    format!("{cut:?}")
}

/// Checks a label key.
pub fn check_key(key: &str) -> Result<(), LabelError> {
    if well_formed(key, "._/-") {
        Ok(())
    } else {
        Err(LabelError(format!(
            "label key {} must be 1-{MAX_LABEL_LEN} characters of [A-Za-z0-9._/-], starting and ending with a letter or digit",
            shown(key)
        )))
    }
}

/// Checks a label value (`key` names it in the error).
pub fn check_value(key: &str, value: &str) -> Result<(), LabelError> {
    if well_formed(value, "._-") {
        Ok(())
    } else {
        Err(LabelError(format!(
            "label {}: value {} must be 1-{MAX_LABEL_LEN} characters of [A-Za-z0-9._-], starting and ending with a letter or digit",
            shown(key),
            shown(value)
        )))
    }
}

/// Checks every pair, and that there are at most [`MAX_LABELS`].
pub fn check_labels(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError(format!(
            "at most {MAX_LABELS} labels, got {}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        check_key(k)?;
        check_value(k, v)?;
    }
    Ok(())
}

/// Parses and checks `key=value`.
pub fn parse_label(s: &str) -> Result<(String, String), LabelError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| LabelError(format!("label {} must look like key=value", shown(s))))?;
    check_key(k)?;
    check_value(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Whether `labels` hold every pair of `selector` (an empty selector is
/// met by every agent).
pub fn satisfies(labels: &Labels, selector: &Labels) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
}

/// `k=v, k2=v2`.
pub fn pairs(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn good_labels_parse() {
        assert_eq!(
            parse_label("trust=deploy"),
            Ok(("trust".into(), "deploy".into()))
        );
        assert_eq!(
            parse_label("example.com/zone=eu-1"),
            Ok(("example.com/zone".into(), "eu-1".into()))
        );
        assert!(check_key(&"k".repeat(63)).is_ok());
    }

    #[test]
    fn bad_labels_are_refused_naming_the_problem() {
        let err = parse_label("trust").unwrap_err().to_string();
        assert!(err.contains("key=value"), "{err}");
        let err = parse_label("=deploy").unwrap_err().to_string();
        assert!(err.contains("label key \"\""), "{err}");
        let err = parse_label("trust=").unwrap_err().to_string();
        assert!(err.contains("label \"trust\": value \"\""), "{err}");
        let err = parse_label("trust=a b").unwrap_err().to_string();
        assert!(err.contains("[A-Za-z0-9._-]"), "{err}");
        assert!(parse_label("trust=a/b").is_err(), "no slash in values");
        assert!(
            parse_label("-trust=x").is_err(),
            "starts with a letter or digit"
        );
        assert!(
            parse_label("trust=x.").is_err(),
            "ends with a letter or digit"
        );
        assert!(check_key(&"k".repeat(64)).is_err());
        let err = parse_label("t\n=x").unwrap_err().to_string();
        assert!(!err.contains('\n'), "control characters are escaped: {err}");
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let err = check_labels(&many).unwrap_err().to_string();
        assert!(err.contains("at most 32 labels"), "{err}");
    }

    #[test]
    fn a_selector_needs_every_pair_with_its_value() {
        let have = labels(&[("trust", "deploy"), ("rack", "b3")]);
        assert!(satisfies(&have, &Labels::new()));
        assert!(satisfies(&have, &labels(&[("trust", "deploy")])));
        assert!(!satisfies(&have, &labels(&[("trust", "build")])));
        assert!(!satisfies(
            &have,
            &labels(&[("trust", "deploy"), ("zone", "eu")])
        ));
        assert!(!satisfies(&Labels::new(), &labels(&[("trust", "deploy")])));
    }
}
