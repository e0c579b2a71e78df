//! Request parameters from the query string, a form body or a JSON body, read the way
//! GitLab's Grape API reads them.
//!
//! Grape merges query, form (`application/x-www-form-urlencoded`) and JSON parameters
//! into one hash; array parameters arrive as `key[]=a&key[]=b` (doc/api/rest/_index.md
//! "array") or, for `CommaSeparatedToArray` parameters such as `tag_list`, as `a,b`.
//! Unknown parameters are ignored, like GitLab does. Multipart bodies are not supported.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum PVal {
    Str(String),
    List(Vec<String>),
    Json(Value),
}

/// A bag of request parameters, in arrival order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    entries: Vec<(String, PVal)>,
}

impl Params {
    /// Parses a URL query string (without the `?`).
    pub fn from_query(query: &str) -> Self {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let mut p = Params::default();
        for (k, v) in pairs {
            p.push_pair(k, v);
        }
        p
    }

    /// Parses a request body by its content type. `Err` carries a message for a 400.
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params::default());
        }
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        if ct.starts_with("application/json") || (ct.is_empty() && body.first() == Some(&b'{')) {
            let v: Value =
                serde_json::from_slice(body).map_err(|_| "Invalid JSON body".to_owned())?;
            let Value::Object(map) = v else {
                return Err("JSON body must be an object".to_owned());
            };
            let mut p = Params::default();
            for (k, v) in map {
                p.entries.push((k, PVal::Json(v)));
            }
            return Ok(p);
        }
        let text = std::str::from_utf8(body).map_err(|_| "Invalid form body".to_owned())?;
        Ok(Params::from_query(text))
    }

    fn push_pair(&mut self, key: String, value: String) {
        if let Some(base) = key.strip_suffix("[]") {
            if let Some((_, PVal::List(list))) = self.entries.iter_mut().find(|(k, _)| k == base) {
                list.push(value);
            } else {
                self.entries
                    .push((base.to_owned(), PVal::List(vec![value])));
            }
        } else {
            self.entries.retain(|(k, _)| k != &key);
            self.entries.push((key, PVal::Str(value)));
        }
    }

    /// Adds `other`'s entries, replacing keys present in both.
    pub fn merge(mut self, other: Params) -> Self {
        for (k, v) in other.entries {
            self.entries.retain(|(ek, _)| ek != &k);
            self.entries.push((k, v));
        }
        self
    }

    fn get(&self, key: &str) -> Option<&PVal> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value as a string (the first one for arrays); `None` if absent or null.
    pub fn first(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            PVal::Str(s) => Some(s),
            PVal::List(l) => l.first().map(String::as_str),
            PVal::Json(Value::String(s)) => Some(s),
            PVal::Json(_) => None,
        }
    }

    /// A string parameter; JSON numbers and booleans are accepted and stringified.
    pub fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            PVal::Json(Value::Null) => None,
            PVal::Json(Value::Number(n)) => Some(n.to_string()),
            PVal::Json(Value::Bool(b)) => Some(b.to_string()),
            _ => self.first(key).map(str::to_owned),
        }
    }

    /// Grape `Boolean`: `true/false/1/0/t/f/yes/no`; `Err` is the Grape message.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, String> {
        let invalid = || format!("{key} is invalid");
        let s = match self.get(key) {
            None | Some(PVal::Json(Value::Null)) => return Ok(None),
            Some(PVal::Json(Value::Bool(b))) => return Ok(Some(*b)),
            Some(PVal::Json(Value::Number(n))) => n.to_string(),
            Some(PVal::Json(Value::String(s))) | Some(PVal::Str(s)) => s.clone(),
            Some(_) => return Err(invalid()),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" => Ok(Some(true)),
            "false" | "f" | "0" | "no" | "n" => Ok(Some(false)),
            _ => Err(invalid()),
        }
    }

    /// Grape `Integer`; `Err` is the Grape message.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, String> {
        let invalid = || format!("{key} is invalid");
        match self.get(key) {
            None | Some(PVal::Json(Value::Null)) => Ok(None),
            Some(PVal::Json(Value::Number(n))) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(PVal::Json(Value::String(s))) | Some(PVal::Str(s)) => {
                s.trim().parse::<i64>().map(Some).map_err(|_| invalid())
            }
            Some(_) => Err(invalid()),
        }
    }

    /// An array parameter (`key[]=a&key[]=b`, a JSON array, or a single value).
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        match self.get(key)? {
            PVal::Str(s) => Some(vec![s.clone()]),
            PVal::List(l) => Some(l.clone()),
            PVal::Json(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            PVal::Json(Value::Null) => None,
            PVal::Json(Value::String(s)) => Some(vec![s.clone()]),
            PVal::Json(other) => Some(vec![other.to_string()]),
        }
    }

    /// A `CommaSeparatedToArray` parameter such as `tag_list`: every element is split
    /// on commas and stripped, empty entries dropped.
    pub fn comma_list(&self, key: &str) -> Option<Vec<String>> {
        let raw = self.list(key)?;
        Some(
            raw.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// A JSON object parameter (e.g. the runner's `info`).
    pub fn object(&self, key: &str) -> Option<&Value> {
        match self.get(key)? {
            PVal::Json(v @ Value::Object(_)) => Some(v),
            _ => None,
        }
    }

    /// The query string for a pagination link: every parameter with `page` and
    /// `per_page` replaced, as Rails' `Hash#to_query` writes it (sorted pairs,
    /// arrays as `key%5B%5D=value`).
    pub fn to_query_with_page(&self, page: usize, per_page: usize) -> String {
        let mut pairs: Vec<String> = Vec::new();
        let enc = |k: &str, v: &str| serde_urlencoded::to_string([(k, v)]).unwrap_or_default();
        for (k, v) in &self.entries {
            if k == "page" || k == "per_page" {
                continue;
            }
            match v {
                PVal::Str(s) => pairs.push(enc(k, s)),
                PVal::List(l) => {
                    let key = format!("{k}[]");
                    pairs.extend(l.iter().map(|s| enc(&key, s)));
                }
                PVal::Json(Value::String(s)) => pairs.push(enc(k, s)),
                PVal::Json(Value::Array(a)) => {
                    let key = format!("{k}[]");
                    pairs.extend(a.iter().map(|s| match s {
                        Value::String(s) => enc(&key, s),
                        other => enc(&key, &other.to_string()),
                    }));
                }
                PVal::Json(other) => pairs.push(enc(k, &other.to_string())),
            }
        }
        pairs.push(enc("page", &page.to_string()));
        pairs.push(enc("per_page", &per_page.to_string()));
        pairs.sort();
        pairs.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_commas_and_json() {
        let q = Params::from_query("scope[]=pending&scope[]=running&tag_list=a,%20b&x=1");
        assert_eq!(
            q.list("scope"),
            Some(vec!["pending".into(), "running".into()])
        );
        assert_eq!(q.comma_list("tag_list"), Some(vec!["a".into(), "b".into()]));
        let j = Params::from_body(
            Some("application/json"),
            br#"{"tag_list":["gpu","x,y"],"paused":"true","maximum_timeout":3600}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            j.comma_list("tag_list"),
            Some(vec!["gpu".into(), "x".into(), "y".into()])
        );
        assert_eq!(j.boolean("paused"), Ok(Some(true)));
        assert_eq!(j.integer("maximum_timeout"), Ok(Some(3600)));
        assert!(
            Params::from_query("paused=maybe")
                .boolean("paused")
                .is_err()
        );
    }

    #[test]
    fn link_query_is_sorted_like_rails() {
        let q = Params::from_query("scope[]=running&membership=true&page=3&scope[]=pending");
        assert_eq!(
            q.to_query_with_page(4, 20),
            "membership=true&page=4&per_page=20&scope%5B%5D=pending&scope%5B%5D=running"
        );
    }
}
