//! Text formats in the source's encoding. An encoding whose line breaks, separators and
//! quotes are ASCII bytes (UTF-8, Latin-1, Windows-1252, ...) is decoded a line or a field
//! at a time, so a message streams; any other (UTF-16) is decoded whole first. A byte-order
//! mark is honoured and removed, as a browser would.

use std::borrow::Cow;
use std::io::{BufRead, Cursor, Read};

use encoding_rs::{Encoding, UTF_8};

/// Decodes pieces of a message (a line, a field) to UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct Decoder(&'static Encoding);

impl Decoder {
    pub fn utf8() -> Decoder {
        Decoder(UTF_8)
    }

    pub fn decode<'b>(&self, bytes: &'b [u8]) -> Result<Cow<'b, str>, String> {
        if self.0 == UTF_8 {
            return std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(invalid_utf8);
        }
        self.0
            .decode_without_bom_handling_and_without_replacement(bytes)
            .ok_or_else(|| format!("bytes that are not valid {}", self.0.name()))
    }

    /// As `decode`, keeping UTF-8 bytes where they are.
    fn decode_owned(&self, bytes: Vec<u8>) -> Result<String, String> {
        if self.0 == UTF_8 {
            return String::from_utf8(bytes).map_err(|e| invalid_utf8(e.utf8_error()));
        }
        self.decode(&bytes).map(Cow::into_owned)
    }
}

fn invalid_utf8(e: std::str::Utf8Error) -> String {
    format!("invalid UTF-8 at byte {}", e.valid_up_to())
}

/// The message's bytes after any byte-order mark, and how to decode them; `Err` names an
/// encoding that is not known or bytes that are not in it.
#[allow(clippy::type_complexity)]
pub fn open(
    mut input: Box<dyn BufRead + Send>,
    label: Option<&str>,
) -> std::io::Result<Result<(Box<dyn BufRead + Send>, Decoder), String>> {
    let label = label.unwrap_or("utf-8");
    let Some(declared) = Encoding::for_label(label.as_bytes()) else {
        return Ok(Err(format!("encoding '{label}' is not known")));
    };
    let mut head = Vec::with_capacity(3);
    (&mut input).take(3).read_to_end(&mut head)?;
    let (encoding, bom) = Encoding::for_bom(&head).unwrap_or((declared, 0));
    let rest: Box<dyn BufRead + Send> = Box::new(Cursor::new(head[bom..].to_vec()).chain(input));
    if encoding.is_ascii_compatible() {
        return Ok(Ok((rest, Decoder(encoding))));
    }
    let mut bytes = Vec::new();
    { rest }.read_to_end(&mut bytes)?;
    match encoding.decode_without_bom_handling_and_without_replacement(&bytes) {
        Some(text) => Ok(Ok((Box::new(Cursor::new(text.into_owned().into_bytes())), Decoder::utf8()))),
        None => Ok(Err(format!("bytes that are not valid {}", encoding.name()))),
    }
}

/// The whole rest of a message as text.
pub fn read_whole(
    mut input: Box<dyn BufRead + Send>,
    decoder: Decoder,
) -> std::io::Result<Result<String, String>> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    Ok(decoder.decode_owned(bytes))
}
