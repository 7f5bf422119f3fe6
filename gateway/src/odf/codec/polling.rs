//! The polling-source part of the codec (`SetPollingSource` and its fetch and prepare
//! steps), both directions: stored so that chains written by other ODF tools round-trip.

use super::decode::{
    Result, enum_value, merge_strategy, read_step, required, transform, union, unknown_member,
};
use super::encode::{
    Builder, Member, Off, merge_strategy as encode_merge_strategy, position, read_step as encode_read_step,
    string, string_list, strings, table, tables, text, transform as encode_transform,
};
use super::reader::Table;
use crate::odf::polling::*;

pub(super) fn encode(b: &mut Builder, e: &SetPollingSource) -> Off {
    let fetch = encode_fetch_step(b, &e.fetch);
    let prepare = tables(b, e.prepare.as_deref(), |b, step| {
        let member = encode_prep_step(b, step);
        table(b, |t| t.union(0, Some(member)))
    });
    let read = encode_read_step(b, &e.read);
    let preprocess = e.preprocess.as_ref().map(|p| encode_transform(b, p));
    let merge = encode_merge_strategy(b, &e.merge);
    table(b, |t| {
        t.union(0, Some(fetch));
        t.child(2, prepare);
        t.union(3, Some(read));
        t.union(5, preprocess);
        t.union(7, Some(merge));
    })
}

fn encode_name_values(b: &mut Builder, list: &Option<Vec<NameValue>>) -> Option<Off> {
    tables(b, list.as_deref(), |b, nv| {
        let name = text(b, &nv.name);
        let value = text(b, &nv.value);
        table(b, |t| {
            t.child(0, name);
            t.child(1, value);
        })
    })
}

fn encode_event_time_source(b: &mut Builder, s: &EventTimeSource) -> Member {
    let off = match s {
        EventTimeSource::FromMetadata(_) | EventTimeSource::FromSystemTime(_) => table(b, |_| {}),
        EventTimeSource::FromPath(p) => {
            let pattern = text(b, &p.pattern);
            let format = string(b, &p.timestamp_format);
            table(b, |t| {
                t.child(0, pattern);
                t.child(1, format);
            })
        }
    };
    (position(EventTimeSource::KINDS, s.kind()), off)
}

fn encode_caching(b: &mut Builder, c: &SourceCaching) -> Member {
    let SourceCaching::Forever(_) = c;
    (1, table(b, |_| {}))
}

fn encode_fetch_step(b: &mut Builder, f: &FetchStep) -> Member {
    let off = match f {
        FetchStep::Url(u) => {
            let url = text(b, &u.url);
            let event_time = u.event_time.as_ref().map(|e| encode_event_time_source(b, e));
            let cache = u.cache.as_ref().map(|c| encode_caching(b, c));
            let headers = encode_name_values(b, &u.headers);
            table(b, |t| {
                t.child(0, url);
                t.union(1, event_time);
                t.union(3, cache);
                t.child(5, headers);
            })
        }
        FetchStep::FilesGlob(g) => {
            let path = text(b, &g.path);
            let event_time = g.event_time.as_ref().map(|e| encode_event_time_source(b, e));
            let cache = g.cache.as_ref().map(|c| encode_caching(b, c));
            table(b, |t| {
                t.child(0, path);
                t.union(1, event_time);
                t.union(3, cache);
                t.optional(5, g.order.map(|o| o as i32));
            })
        }
        FetchStep::Container(c) => {
            let image = text(b, &c.image);
            let command = strings(b, &c.command);
            let args = strings(b, &c.args);
            let env = encode_name_values(b, &c.env);
            table(b, |t| {
                [image, command, args, env].into_iter().zip(0..).for_each(|(f, i)| t.child(i, f));
            })
        }
        FetchStep::Mqtt(m) => {
            let host = text(b, &m.host);
            let username = string(b, &m.username);
            let password = string(b, &m.password);
            let topics = tables(b, Some(&m.topics), |b, topic| {
                let path = text(b, &topic.path);
                table(b, |t| {
                    t.child(0, path);
                    t.optional(1, topic.qos.map(|q| q as i32));
                })
            });
            table(b, |t| {
                t.child(0, host);
                t.scalar(1, m.port, 0i32);
                t.child(2, username);
                t.child(3, password);
                t.child(4, topics);
            })
        }
        FetchStep::EthereumLogs(e) => {
            let node_url = string(b, &e.node_url);
            let filter = string(b, &e.filter);
            let signature = string(b, &e.signature);
            table(b, |t| {
                t.optional(0, e.chain_id);
                t.child(1, node_url);
                t.child(2, filter);
                t.child(3, signature);
            })
        }
    };
    (position(FetchStep::KINDS, f.kind()), off)
}

fn encode_prep_step(b: &mut Builder, p: &PrepStep) -> Member {
    let off = match p {
        PrepStep::Decompress(d) => {
            let sub_path = string(b, &d.sub_path);
            table(b, |t| {
                t.scalar(0, d.format as i32, 0i32);
                t.child(1, sub_path);
            })
        }
        PrepStep::Pipe(pipe) => {
            let command = string_list(b, &pipe.command);
            table(b, |t| t.child(0, command))
        }
    };
    (position(PrepStep::KINDS, p.kind()), off)
}

pub(super) fn decode(t: &Table) -> Result<SetPollingSource> {
    let prepare = t
        .tables(2)?
        .map(|steps| {
            steps
                .iter()
                .map(|w| required(decode_prep_step(w)?, "PrepStepWrapper.value"))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(SetPollingSource {
        fetch: required(decode_fetch_step(t, 0)?, "SetPollingSource.fetch")?,
        prepare,
        read: required(read_step(t, 3)?, "SetPollingSource.read")?,
        preprocess: transform(t, 5)?,
        merge: required(merge_strategy(t, 7)?, "SetPollingSource.merge")?,
    })
}

fn decode_name_values(t: &Table, index: u16) -> Result<Option<Vec<NameValue>>> {
    t.tables(index)?
        .map(|list| {
            list.iter()
                .map(|nv| {
                    Ok(NameValue {
                        name: required(nv.string(0)?, "name")?,
                        value: required(nv.string(1)?, "value")?,
                    })
                })
                .collect()
        })
        .transpose()
}

fn decode_event_time_source(t: &Table, index: u16) -> Result<Option<EventTimeSource>> {
    let Some((kind, s)) = union(t, index, EventTimeSource::KINDS, "EventTimeSource")? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "FromMetadata" => EventTimeSource::FromMetadata(Empty {}),
        "FromPath" => EventTimeSource::FromPath(EventTimeSourceFromPath {
            pattern: required(s.string(0)?, "FromPath.pattern")?,
            timestamp_format: s.string(1)?,
        }),
        "FromSystemTime" => EventTimeSource::FromSystemTime(Empty {}),
        other => return Err(unknown_member("EventTimeSource", other)),
    }))
}

fn decode_caching(t: &Table, index: u16) -> Result<Option<SourceCaching>> {
    Ok(union(t, index, SourceCaching::KINDS, "SourceCaching")?.map(|_| SourceCaching::Forever(Empty {})))
}

fn decode_fetch_step(t: &Table, index: u16) -> Result<Option<FetchStep>> {
    let Some((kind, f)) = union(t, index, FetchStep::KINDS, "FetchStep")? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "Url" => FetchStep::Url(FetchStepUrl {
            url: required(f.string(0)?, "Url.url")?,
            event_time: decode_event_time_source(&f, 1)?,
            cache: decode_caching(&f, 3)?,
            headers: decode_name_values(&f, 5)?,
        }),
        "FilesGlob" => FetchStep::FilesGlob(FetchStepFilesGlob {
            path: required(f.string(0)?, "FilesGlob.path")?,
            event_time: decode_event_time_source(&f, 1)?,
            cache: decode_caching(&f, 3)?,
            order: f
                .optional::<i32>(5)?
                .map(|o| enum_value(SourceOrdering::ALL, o.into(), "SourceOrdering"))
                .transpose()?,
        }),
        "Container" => FetchStep::Container(FetchStepContainer {
            image: required(f.string(0)?, "Container.image")?,
            command: f.strings(1)?,
            args: f.strings(2)?,
            env: decode_name_values(&f, 3)?,
        }),
        "Mqtt" => FetchStep::Mqtt(FetchStepMqtt {
            host: required(f.string(0)?, "Mqtt.host")?,
            port: f.scalar(1, 0i32)?,
            username: f.string(2)?,
            password: f.string(3)?,
            topics: required(f.tables(4)?, "Mqtt.topics")?
                .iter()
                .map(|topic| {
                    Ok(MqttTopicSubscription {
                        path: required(topic.string(0)?, "MqttTopicSubscription.path")?,
                        qos: topic
                            .optional::<i32>(1)?
                            .map(|q| enum_value(MqttQos::ALL, q.into(), "MqttQos"))
                            .transpose()?,
                    })
                })
                .collect::<Result<_>>()?,
        }),
        "EthereumLogs" => FetchStep::EthereumLogs(FetchStepEthereumLogs {
            chain_id: f.optional(0)?,
            node_url: f.string(1)?,
            filter: f.string(2)?,
            signature: f.string(3)?,
        }),
        other => return Err(unknown_member("FetchStep", other)),
    }))
}

fn decode_prep_step(wrapper: &Table) -> Result<Option<PrepStep>> {
    let Some((kind, p)) = union(wrapper, 0, PrepStep::KINDS, "PrepStep")? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "Decompress" => PrepStep::Decompress(PrepStepDecompress {
            format: enum_value(CompressionFormat::ALL, p.scalar(0, 0i32)?.into(), "CompressionFormat")?,
            sub_path: p.string(1)?,
        }),
        "Pipe" => PrepStep::Pipe(PrepStepPipe { command: required(p.strings(0)?, "Pipe.command")? }),
        other => return Err(unknown_member("PrepStep", other)),
    }))
}
