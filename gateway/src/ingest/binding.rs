//! Column bindings: a rule every record of a message must keep for one read-schema column,
//! such as "device_id is A-17" or "device_id starts with B-". The intake makes them from
//! who sent the message (its identity's grants, its route); the reader checks each record
//! against them, so a record whose column disagrees is rejected like any record that does
//! not fit, and the records around it go on. A binding to one exact value also fills the
//! column where a record leaves it out.

use std::fmt;

/// One column's rule, and whose rule it is (for the rejection's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnBinding {
    pub column: String,
    pub rule: BindingRule,
    /// Who set the rule: `identity 'vendorA'`, `route 'trackers/{device_id}/gps'`.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingRule {
    /// The value must match: literal text and `*` (any run of characters, none included).
    Pattern(Pattern),
    /// The rule needs something the request does not have (an MQTT client id over HTTP, a
    /// certificate without one): no record can keep it.
    Unavailable(String),
}

/// Literal text and wildcards; a literal never holds a wildcard, so text taken from a
/// request (a client id with a `*` in it) stays literal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pattern(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// `*`: any run of characters.
    Any,
}

impl Pattern {
    pub fn new(parts: Vec<Part>) -> Pattern {
        // Adjacent texts are joined and repeated wildcards are one, so that `exact` is
        // simple and matching never backtracks over empty parts.
        let mut joined: Vec<Part> = Vec::with_capacity(parts.len());
        for part in parts {
            match (joined.last_mut(), part) {
                (_, Part::Text(t)) if t.is_empty() => {}
                (Some(Part::Text(last)), Part::Text(t)) => last.push_str(&t),
                (Some(Part::Any), Part::Any) => {}
                (_, part) => joined.push(part),
            }
        }
        Pattern(joined)
    }

    /// Parses `A-*`: `*` is the only wildcard.
    pub fn parse(text: &str) -> Pattern {
        let mut parts = Vec::new();
        for (i, piece) in text.split('*').enumerate() {
            if i > 0 {
                parts.push(Part::Any);
            }
            parts.push(Part::Text(piece.to_owned()));
        }
        Pattern::new(parts)
    }

    pub fn parts(&self) -> &[Part] {
        &self.0
    }

    /// The one value the pattern matches, when it has no wildcard.
    pub fn exact(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Whether `value` matches: the first literal must start it, the last end it, and the
    /// ones between are found in order (leftmost first, which is enough with only `*`).
    pub fn matches(&self, value: &str) -> bool {
        let parts = self.0.as_slice();
        let mut rest = value;
        let mut anchored = true;
        for (i, part) in parts.iter().enumerate() {
            match part {
                Part::Any => anchored = false,
                Part::Text(text) if i + 1 == parts.len() && i > 0 => {
                    return rest.ends_with(text.as_str()) && (!anchored || rest == text);
                }
                Part::Text(text) if anchored => match rest.strip_prefix(text.as_str()) {
                    Some(after) => rest = after,
                    None => return false,
                },
                Part::Text(text) => match rest.find(text.as_str()) {
                    Some(at) => {
                        rest = &rest[at + text.len()..];
                        anchored = true;
                    }
                    None => return false,
                },
            }
        }
        !anchored || rest.is_empty()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Any => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for ColumnBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            BindingRule::Pattern(p) => match p.exact() {
                Some(value) => write!(f, "{} binds column '{}' to '{value}'", self.by, self.column),
                None => write!(f, "{} binds column '{}' to values matching '{p}'", self.by, self.column),
            },
            BindingRule::Unavailable(why) => {
                write!(f, "{} binds column '{}', but {why}", self.by, self.column)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_prefixes_suffixes_and_middles() {
        let p = Pattern::parse;
        assert!(p("A-*").matches("A-17") && p("A-*").matches("A-") && !p("A-*").matches("B-A-1"));
        assert!(p("*-17").matches("A-17") && !p("*-17").matches("A-170"));
        assert!(p("A-*-x").matches("A-1-x") && p("A-*-x").matches("A--x") && !p("A-*-x").matches("A-x"));
        assert!(p("*").matches("") && p("*").matches("anything"));
        assert!(p("a*b*c").matches("abc") && p("a*b*c").matches("a-b-b-c") && !p("a*b*c").matches("acb"));
        assert!(p("*ab*").matches("xaby") && !p("*ab*").matches("ba"));
        assert!(p("A-17").matches("A-17") && !p("A-17").matches("A-170") && !p("A-17").matches("A-1"));
        assert!(p("").matches("") && !p("").matches("x"));
        assert_eq!(p("A-17").exact(), Some("A-17"));
        assert_eq!(p("A-**").exact(), None);
        assert_eq!(p("A-**").to_string(), "A-*");
    }

    #[test]
    fn text_from_a_request_stays_literal() {
        let p = Pattern::new(vec![Part::Text("dev*".into()), Part::Any]);
        assert!(p.matches("dev*-1"));
        assert!(!p.matches("device-1"), "the client id's '*' is not a wildcard");
    }
}
