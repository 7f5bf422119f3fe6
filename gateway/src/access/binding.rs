//! Column bindings in grants: what an identity may write into a column, so that one vendor
//! (or one device) cannot write records under another's device ids. A binding names a
//! read-schema column and a value template: literal text, `*` (any run of characters) and
//! placeholders filled from the request's credentials: `{identity}` (the identity's name,
//! which is the MQTT or HTTP Basic username), `{client_id}` (the MQTT client id),
//! `{cert_subject}` and `{cert_cn}` (the client certificate's subject and common name).
//! `A-*` lets a vendor write only device ids starting with `A-`; `{client_id}` ties each
//! record to the connection that sent it. The intake turns the bindings that apply to a
//! request into `ColumnBinding`s, which the reader checks on every record.

use super::Principal;
use crate::ingest::{BindingRule, ColumnBinding, Part, Pattern};
use crate::routes::Transport;

/// A binding as configured: which column, which values, on which of the sources written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantBinding {
    pub column: String,
    pub value: Template,
    /// `dataset/source` patterns (as in `write`) where it holds; empty: every source.
    pub sources: Vec<String>,
}

/// A value with placeholders, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Any,
    Identity,
    ClientId,
    CertSubject,
    CertCn,
}

/// The placeholders a template may use.
pub const PLACEHOLDERS: &str = "{identity}, {client_id}, {cert_subject}, {cert_cn}";

impl Template {
    /// `A-*`, `{identity}`, `{client_id}`, `site-7/{cert_cn}`; an error names the bad part.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let literal_end = rest.find(['{', '}', '*']).unwrap_or(rest.len());
            if literal_end > 0 {
                pieces.push(Piece::Text(rest[..literal_end].to_owned()));
                rest = &rest[literal_end..];
                continue;
            }
            if let Some(after) = rest.strip_prefix('*') {
                pieces.push(Piece::Any);
                rest = after;
                continue;
            }
            let close = rest.find('}').filter(|_| rest.starts_with('{')).ok_or_else(|| {
                format!("'{text}': a '{{' or '}}' that is not part of a placeholder ({PLACEHOLDERS})")
            })?;
            pieces.push(match &rest[..=close] {
                "{identity}" => Piece::Identity,
                "{client_id}" => Piece::ClientId,
                "{cert_subject}" => Piece::CertSubject,
                "{cert_cn}" => Piece::CertCn,
                other => return Err(format!("'{text}': {other} is not a placeholder ({PLACEHOLDERS})")),
            });
            rest = &rest[close + 1..];
        }
        if pieces.is_empty() {
            return Err("the value is empty: give a value, a pattern such as \"A-*\" or a placeholder".into());
        }
        Ok(Template(pieces))
    }

    /// The rule for a request from `caller`: placeholders become the caller's values, taken
    /// literally; one the request cannot fill makes a rule no record keeps.
    pub fn expand(&self, caller: &Caller) -> BindingRule {
        let mut parts = Vec::with_capacity(self.0.len());
        for piece in &self.0 {
            let filled = match piece {
                Piece::Text(text) => Ok(text.clone()),
                Piece::Any => {
                    parts.push(Part::Any);
                    continue;
                }
                Piece::Identity => match caller.principal {
                    Principal::Identity(name) => Ok(name.clone()),
                    Principal::Anonymous => Err("an anonymous client has no {identity}".to_string()),
                },
                Piece::ClientId => caller.client_id.map(str::to_owned).ok_or_else(|| {
                    format!("a {} request has no {{client_id}} (only MQTT has one)", caller.transport)
                }),
                Piece::CertSubject => caller.cert.map(|(subject, _)| subject.to_owned()).ok_or_else(|| {
                    "the request came without a client certificate ({cert_subject})".to_string()
                }),
                Piece::CertCn => match caller.cert {
                    Some((_, Some(cn))) => Ok(cn.to_owned()),
                    Some((_, None)) => {
                        Err("the client certificate has no common name ({cert_cn})".to_string())
                    }
                    None => Err("the request came without a client certificate ({cert_cn})".to_string()),
                },
            };
            match filled {
                Ok(text) => parts.push(Part::Text(text)),
                Err(why) => return BindingRule::Unavailable(why),
            }
        }
        BindingRule::Pattern(Pattern::new(parts))
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in &self.0 {
            f.write_str(match piece {
                Piece::Text(text) => text,
                Piece::Any => "*",
                Piece::Identity => "{identity}",
                Piece::ClientId => "{client_id}",
                Piece::CertSubject => "{cert_subject}",
                Piece::CertCn => "{cert_cn}",
            })?;
        }
        Ok(())
    }
}

/// What the transport knows of who sent a request: the values a template may take.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a Principal,
    /// For the reason when a placeholder cannot be filled.
    pub transport: Transport,
    /// The MQTT client id.
    pub client_id: Option<&'a str>,
    /// The client certificate's subject and common name, when one was presented.
    pub cert: Option<(&'a str, Option<&'a str>)>,
}

impl GrantBinding {
    /// The rule for a request from `caller`, named after whose grant it is.
    pub fn bind(&self, caller: &Caller) -> ColumnBinding {
        let by = match caller.principal {
            Principal::Identity(name) => format!("the grant of identity '{name}'"),
            Principal::Anonymous => "the anonymous grant".to_string(),
        };
        ColumnBinding { column: self.column.clone(), rule: self.value.expand(caller), by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller<'a>(principal: &'a Principal, client_id: Option<&'a str>) -> Caller<'a> {
        Caller {
            principal,
            transport: Transport::Mqtt,
            client_id,
            cert: Some(("CN=t-9,O=Acme", Some("t-9"))),
        }
    }

    fn pattern(rule: BindingRule) -> Pattern {
        match rule {
            BindingRule::Pattern(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn templates_fill_placeholders_literally() {
        let who = Principal::Identity("vendorA".into());
        let at = caller(&who, Some("dev*1"));
        assert_eq!(pattern(Template::parse("A-*").unwrap().expand(&at)), Pattern::parse("A-*"));
        let id = pattern(Template::parse("{identity}").unwrap().expand(&at));
        assert_eq!(id.exact(), Some("vendorA"));
        let client = pattern(Template::parse("{client_id}").unwrap().expand(&at));
        assert!(client.matches("dev*1") && !client.matches("dev-1"), "a client id's '*' is text");
        let cert = pattern(Template::parse("site/{cert_cn}-*").unwrap().expand(&at));
        assert!(cert.matches("site/t-9-3") && !cert.matches("site/t-8-3"));
        assert_eq!(Template::parse("x-{cert_subject}").unwrap().to_string(), "x-{cert_subject}");
    }

    #[test]
    fn a_placeholder_the_request_cannot_fill_binds_to_nothing() {
        let anonymous = Principal::Anonymous;
        let over_coap =
            Caller { principal: &anonymous, transport: Transport::Coap, client_id: None, cert: None };
        for (template, says) in
            [("{identity}", "anonymous"), ("{client_id}", "coap request"), ("{cert_cn}", "certificate")]
        {
            match Template::parse(template).unwrap().expand(&over_coap) {
                BindingRule::Unavailable(why) => assert!(why.contains(says), "{why}"),
                other => panic!("{template}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(Template::parse("{device}").unwrap_err().contains("{device} is not a placeholder"));
        assert!(Template::parse("A-{").unwrap_err().contains("not part of a placeholder"));
        assert!(Template::parse("}").unwrap_err().contains("not part of a placeholder"));
        assert!(Template::parse("").unwrap_err().contains("empty"));
    }
}
