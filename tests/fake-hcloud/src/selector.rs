//! Hetzner label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//! `k notin (a,b)`, terms joined by commas (AND).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Has(String),
    Missing(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector(Vec<Term>);

fn split_terms(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|t| t.trim().to_string()).collect()
}

fn set(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

impl Selector {
    /// Parses a selector; `Err` carries the API's message.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for t in split_terms(s) {
            if t.is_empty() {
                return Err(format!("invalid label_selector {s:?}: empty term"));
            }
            let term = if let Some(k) = t.strip_prefix('!') {
                Term::Missing(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                Term::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Term::NotIn(
                    k.trim().into(),
                    set(v).ok_or(format!("invalid label_selector {s:?}"))?,
                )
            } else if let Some((k, v)) = t.split_once(" in ") {
                Term::In(
                    k.trim().into(),
                    set(v).ok_or(format!("invalid label_selector {s:?}"))?,
                )
            } else {
                Term::Has(t.trim().to_string())
            };
            let key = match &term {
                Term::Eq(k, _)
                | Term::Ne(k, _)
                | Term::Has(k)
                | Term::Missing(k)
                | Term::In(k, _)
                | Term::NotIn(k, _) => k,
            };
            if !valid_key(key) {
                return Err(format!("invalid label_selector {s:?}: bad key {key:?}"));
            }
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    /// True if the `labels` object satisfies every term.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::Has(k) => get(k).is_some(),
            Term::Missing(k) => get(k).is_none(),
            Term::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Term::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_operator() {
        let l = json!({"daon-ops/managed": "true", "env": "prod"});
        for (sel, want) in [
            ("daon-ops/managed=true", true),
            ("daon-ops/managed==true", true),
            ("daon-ops/managed!=true", false),
            ("env", true),
            ("!env", false),
            ("!other", true),
            ("env in (prod,staging)", true),
            ("env notin (prod,staging)", false),
            ("env=prod,daon-ops/managed=true", true),
            ("env=prod,other", false),
        ] {
            assert_eq!(Selector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
        assert!(Selector::parse("a,,b").is_err());
        assert!(Selector::parse("k in a").is_err());
    }
}
