//! The offsets a commit records for a push source fed from Kafka: for each topic and
//! partition, the offset of the next record to consume. Written as the AddData's
//! `newSourceState` (kind `odf-gateway/kafka-offsets`), as JSON with sorted keys, so that
//! the same offsets always read the same: `{"trackers.vendorA":{"0":1042,"1":977}}`.

use std::collections::BTreeMap;

/// The source-state kind of Kafka offsets (kamu ignores kinds it does not know).
pub const STATE_KIND: &str = "odf-gateway/kafka-offsets";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(BTreeMap<(String, i32), i64>);

impl Offsets {
    pub fn parse(value: &str) -> Result<Offsets, String> {
        let topics: BTreeMap<String, BTreeMap<String, i64>> = serde_json::from_str(value)
            .map_err(|e| format!("the recorded Kafka offsets '{value}' do not read: {e}"))?;
        let mut offsets = BTreeMap::new();
        for (topic, partitions) in topics {
            for (partition, offset) in partitions {
                let partition: i32 = partition.parse().map_err(|_| {
                    format!("the recorded Kafka offsets name partition '{partition}' of '{topic}'")
                })?;
                if offset < 0 {
                    return Err(format!("the recorded Kafka offset of {topic}[{partition}] is {offset}"));
                }
                offsets.insert((topic.clone(), partition), offset);
            }
        }
        Ok(Offsets(offsets))
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(&(topic.to_owned(), partition)).copied()
    }

    pub fn set(&mut self, topic: &str, partition: i32, next: i64) {
        self.0.insert((topic.to_owned(), partition), next);
    }

    /// These offsets moved on by `marks`, each (an index into `partitions`, the offset after
    /// a record taken there): a partition's last mark wins.
    pub fn advanced(&self, partitions: &[(String, i32)], marks: &[(usize, i64)]) -> Offsets {
        let mut last: Vec<Option<i64>> = vec![None; partitions.len()];
        for &(slot, next) in marks {
            last[slot] = Some(next);
        }
        let mut offsets = self.clone();
        for ((topic, partition), next) in partitions.iter().zip(last) {
            if let Some(next) = next {
                offsets.set(topic, *partition, next);
            }
        }
        offsets
    }

    pub fn encode(&self) -> String {
        let mut topics: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
        for ((topic, partition), next) in &self.0 {
            topics.entry(topic).or_default().insert(partition.to_string(), *next);
        }
        // Maps of strings and integers always serialize.
        serde_json::to_string(&topics).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_back_as_written() {
        let mut offsets = Offsets::default();
        offsets.set("trackers.vendorA", 1, 977);
        offsets.set("trackers.vendorA", 0, 1042);
        offsets.set("a", 10, 0);
        let text = offsets.encode();
        assert_eq!(text, r#"{"a":{"10":0},"trackers.vendorA":{"0":1042,"1":977}}"#);
        assert_eq!(Offsets::parse(&text).unwrap(), offsets);
        assert!(Offsets::parse("{\"t\":{\"x\":1}}").unwrap_err().contains("partition 'x'"));
        assert!(Offsets::parse("42").is_err());
    }
}
