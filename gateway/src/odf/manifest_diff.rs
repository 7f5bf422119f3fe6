//! What a manifest changed since its dataset was made: the events to append so that the
//! dataset says what the manifest says now. A push source new or redefined, a source the
//! manifest disables, new info, license or attachments, a vocabulary or schema set before
//! any data: appended. A source the manifest no longer names is never disabled implicitly.
//! A change the dataset cannot take (the event time column or the schema once data is
//! committed) is an error that says so.

use super::arrow_schema::Vocab;
use super::chain::ChainState;
use super::events::{DisablePushSource, MetadataEvent, SetDataSchema};

/// The events to append, and notes for the operator (sources kept though not in the
/// manifest).
#[derive(Debug, Default, PartialEq)]
pub struct ManifestChanges {
    pub events: Vec<MetadataEvent>,
    pub notes: Vec<String>,
}

/// Compares `declared` (a manifest's events) with the chain; errors name what cannot change.
pub fn manifest_changes(chain: &ChainState, declared: &[MetadataEvent]) -> Result<ManifestChanges, String> {
    let wanted = ChainState::declared(declared).map_err(|(i, reason)| format!("event {i}: {reason}"))?;
    let mut changes = ManifestChanges::default();
    let events = &mut changes.events;

    if Vocab::of(wanted.vocab.as_ref()) != Vocab::of(chain.vocab.as_ref()) {
        if chain.schema.is_some() {
            return Err("the manifest changes SetVocab (the system or event time column names), \
                        which cannot change once data is committed; define a new dataset"
                .into());
        }
        events.extend(wanted.vocab.clone().map(MetadataEvent::SetVocab));
    }
    if let Some(schema) = &wanted.schema {
        match &chain.schema {
            Some(current) if current == schema => {}
            Some(_) => {
                return Err("the manifest declares a SetDataSchema other than the dataset's, and \
                            schemas cannot change once data is committed (schema evolution is not supported)"
                    .into());
            }
            None => events.push(MetadataEvent::SetDataSchema(SetDataSchema {
                raw_arrow_schema: None,
                schema: Some(schema.clone()),
            })),
        }
    }
    if wanted.polling_source.is_some() && chain.polling_source.is_none() {
        events.extend(declared.iter().filter(|e| matches!(e, MetadataEvent::SetPollingSource(_))).cloned());
    }
    for (name, (source, enabled)) in &wanted.push_sources {
        let current = chain.push_sources.get(name);
        let redefine = match current {
            None => true,
            Some((defined, active)) => defined != source || (*enabled && !*active),
        };
        if redefine {
            events.push(MetadataEvent::AddPushSource(source.clone()));
        }
        let active_after = redefine || current.is_some_and(|(_, active)| *active);
        if !*enabled && active_after {
            events.push(MetadataEvent::DisablePushSource(DisablePushSource { source_name: name.clone() }));
        }
    }
    for (name, (_, active)) in &chain.push_sources {
        if *active && !wanted.push_sources.contains_key(name) {
            changes.notes.push(format!(
                "push source '{name}' is no longer in the manifest; it stays enabled (a source is only \
                 disabled by a DisablePushSource in the manifest)"
            ));
        }
    }
    if wanted.info.is_some() && wanted.info != chain.info {
        events.extend(wanted.info.clone().map(MetadataEvent::SetInfo));
    }
    if wanted.license.is_some() && wanted.license != chain.license {
        events.extend(wanted.license.clone().map(MetadataEvent::SetLicense));
    }
    if wanted.attachments.is_some() && wanted.attachments != chain.attachments {
        events.extend(wanted.attachments.clone().map(MetadataEvent::SetAttachments));
    }
    Ok(changes)
}
