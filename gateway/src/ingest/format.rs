//! Input formats, and how a request names one: a media type (MQTT 5 content type, CoAP
//! Content-Format, HTTP Content-Type), a CLI `--input-format`, or a file extension.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::odf::ReadStep;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFormat {
    NdJson,
    Json,
    Csv,
    Cbor,
    /// SenML (RFC 8428) packs, resolved into rows (see `read/senml.rs`).
    SenmlJson,
    SenmlCbor,
}

impl InputFormat {
    pub const ALL: [InputFormat; 6] = [
        InputFormat::NdJson,
        InputFormat::Json,
        InputFormat::Csv,
        InputFormat::Cbor,
        InputFormat::SenmlJson,
        InputFormat::SenmlCbor,
    ];

    /// The format a push source declares.
    pub fn of_source(read: &ReadStep) -> Option<InputFormat> {
        match read {
            ReadStep::NdJson(_) => Some(InputFormat::NdJson),
            ReadStep::Json(_) => Some(InputFormat::Json),
            ReadStep::Csv(_) => Some(InputFormat::Csv),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            InputFormat::NdJson => "application/x-ndjson",
            InputFormat::Json => "application/json",
            InputFormat::Csv => "text/csv",
            InputFormat::Cbor => "application/cbor",
            InputFormat::SenmlJson => "application/senml+json",
            InputFormat::SenmlCbor => "application/senml+cbor",
        }
    }

    /// A media type, parameters (`; charset=utf-8`) ignored.
    pub fn from_media_type(media_type: &str) -> Result<InputFormat, String> {
        let essence = media_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Ok(InputFormat::NdJson),
            "application/json" | "text/json" => Ok(InputFormat::Json),
            "text/csv" | "application/csv" => Ok(InputFormat::Csv),
            "application/cbor" | "application/cbor-seq" => Ok(InputFormat::Cbor),
            "application/senml+json" => Ok(InputFormat::SenmlJson),
            "application/senml+cbor" => Ok(InputFormat::SenmlCbor),
            _ => Err(format!(
                "media type '{media_type}' is not a format the gateway reads (use one of: {})",
                InputFormat::ALL.map(InputFormat::media_type).join(", ")
            )),
        }
    }

    pub fn from_extension(path: &Path) -> Option<InputFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "ndjson" | "jsonl" => Some(InputFormat::NdJson),
            "json" => Some(InputFormat::Json),
            "csv" => Some(InputFormat::Csv),
            "cbor" => Some(InputFormat::Cbor),
            _ => None,
        }
    }
}

impl FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Ok(InputFormat::NdJson),
            "json" => Ok(InputFormat::Json),
            "csv" => Ok(InputFormat::Csv),
            "cbor" => Ok(InputFormat::Cbor),
            "senml-json" | "senml+json" => Ok(InputFormat::SenmlJson),
            "senml-cbor" | "senml+cbor" => Ok(InputFormat::SenmlCbor),
            _ => Err(format!(
                "'{s}' is not an input format (use ndjson, json, csv, cbor, senml-json or senml-cbor)"
            )),
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::NdJson => "NdJson",
            InputFormat::Json => "Json",
            InputFormat::Csv => "Csv",
            InputFormat::Cbor => "Cbor",
            InputFormat::SenmlJson => "SenmlJson",
            InputFormat::SenmlCbor => "SenmlCbor",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_extensions() {
        assert_eq!(InputFormat::from_media_type("text/csv; charset=utf-8"), Ok(InputFormat::Csv));
        assert_eq!(InputFormat::from_media_type("Application/CBOR"), Ok(InputFormat::Cbor));
        assert!(InputFormat::from_media_type("image/png").unwrap_err().contains("application/x-ndjson"));
        assert_eq!(InputFormat::from_extension(Path::new("a/b.JSONL")), Some(InputFormat::NdJson));
        assert_eq!(InputFormat::from_extension(Path::new("a/b")), None);
    }
}
