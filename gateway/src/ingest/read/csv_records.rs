//! CSV records read straight off the input with csv-core. The csv crate's reader builds its
//! parser (a DFA) anew for every reader, which for a message of a few rows cost far more than
//! reading them: a third of the gateway's CPU under HTTP pushes of CSV, once for the check and
//! once for the commit. Here the parsers of a source's options are kept between messages
//! (reset, not built again; a built csv-core parser cannot be cloned: its clone loses the
//! DFA's outputs), and they read from the input's own buffer with no copy in between.

use std::io::BufRead;
use std::sync::{Arc, Mutex};

use csv_core::ReadRecordResult;

/// Parsers kept for reuse, per set of options; more are built when more messages are read at
/// once.
const KEPT_PARSERS: usize = 64;

/// The parsers of one set of CSV options.
#[derive(Clone)]
pub struct Parser(Arc<Pool>);

struct Pool {
    builder: csv_core::ReaderBuilder,
    idle: Mutex<Vec<Box<csv_core::Reader>>>,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").field("builder", &self.0.builder).finish_non_exhaustive()
    }
}

impl Parser {
    pub fn new(separator: u8, quote: Option<u8>, escape: Option<u8>) -> Parser {
        let mut builder = csv_core::ReaderBuilder::new();
        builder.delimiter(separator).escape(escape);
        match quote {
            Some(quote) => builder.quote(quote).quoting(true),
            None => builder.quoting(false),
        };
        Parser(Arc::new(Pool { builder, idle: Mutex::new(Vec::new()) }))
    }

    fn take(&self) -> Box<csv_core::Reader> {
        let idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        idle.unwrap_or_else(|| Box::new(self.0.builder.build()))
    }

    fn give_back(&self, mut core: Box<csv_core::Reader>) {
        core.reset();
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEPT_PARSERS {
            idle.push(core);
        }
    }
}

/// The records of one message, one at a time.
pub struct Records {
    parser: Parser,
    /// Taken from the parser's pool; `None` only once given back.
    core: Option<Box<csv_core::Reader>>,
    input: Box<dyn BufRead + Send>,
    /// The fields of the record read last, end to end, and where each ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
    /// How many of `ends` it holds.
    count: usize,
    /// Its bytes as they came, when kept (to tell a quoted field left open at the end).
    raw: Vec<u8>,
    keep_raw: bool,
    /// The line it began on.
    line: u64,
    /// Whether the end of the input ended it (rather than a line break).
    at_end: bool,
    done: bool,
}

impl Records {
    pub fn new(parser: &Parser, input: Box<dyn BufRead + Send>, keep_raw: bool) -> Records {
        Records {
            core: Some(parser.take()),
            parser: parser.clone(),
            input,
            fields: vec![0; 256],
            ends: vec![0; 16],
            count: 0,
            raw: Vec::new(),
            keep_raw,
            line: 1,
            at_end: false,
            done: false,
        }
    }

    /// Reads the next record; `false` at the end of the input.
    pub fn next(&mut self) -> std::io::Result<bool> {
        self.raw.clear();
        self.count = 0;
        let Some(core) = self.core.as_mut().filter(|_| !self.done) else { return Ok(false) };
        // Line breaks before a record (blank lines, the LF of a CRLF) are skipped here rather
        // than by the parser, so that the record's line is the one it starts on.
        loop {
            let input = self.input.fill_buf()?;
            let breaks = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            if breaks == 0 {
                break;
            }
            let lines = input[..breaks].iter().filter(|&&b| b == b'\n').count() as u64;
            self.input.consume(breaks);
            core.set_line(core.line() + lines);
        }
        self.line = core.line();
        let (mut written, mut ended) = (0, 0);
        loop {
            let input = self.input.fill_buf()?;
            let at_end = input.is_empty();
            let (result, read, wrote, ends) =
                core.read_record(input, &mut self.fields[written..], &mut self.ends[ended..]);
            if self.keep_raw {
                self.raw.extend_from_slice(&input[..read]);
            }
            self.input.consume(read);
            written += wrote;
            ended += ends;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.fields.resize(self.fields.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    self.at_end = at_end;
                    self.count = ended;
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }

    /// The fields of the record read last.
    pub fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.count];
        ends.iter().scan(0, move |start, &end| {
            let field = self.fields.get(*start..end).unwrap_or_default();
            *start = end;
            Some(field)
        })
    }

    /// The line the record read last began on (from 1).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Whether the end of the input ended the record read last.
    pub fn ended_by_input(&self) -> bool {
        self.at_end
    }

    /// The bytes of the record read last as they came (empty unless kept).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            self.parser.give_back(core);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `text`, fed `chunk` bytes at a time, with its line and whether the
    /// end of the input ended it.
    fn read(text: &str, chunk: usize) -> Vec<(u64, Vec<String>, bool)> {
        let input = std::io::BufReader::with_capacity(chunk, std::io::Cursor::new(text.as_bytes().to_vec()));
        let mut records = Records::new(&Parser::new(b',', Some(b'"'), Some(b'\\')), Box::new(input), true);
        let mut out = Vec::new();
        while records.next().unwrap() {
            let fields = records.fields().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            out.push((records.line(), fields, records.ended_by_input()));
        }
        assert!(!records.next().unwrap(), "the end stays the end");
        out
    }

    #[test]
    fn records_are_the_same_whatever_the_input_buffer() {
        // Long fields and many of them outgrow the first buffers; a quoted field spans lines;
        // a blank line is no record. (A byte order mark is gone before: `text::decoded`.)
        let long = "x".repeat(700);
        let many = (0..40).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let text = format!("a,b\r\n\n\"multi\nline\",\"q\"\"uote\"\n{long},2\n{many}\nlast,row");
        let whole = read(&text, 1 << 16);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(read(&text, chunk), whole, "fed {chunk} bytes at a time");
        }
        let lines: Vec<u64> = whole.iter().map(|(line, _, _)| *line).collect();
        assert_eq!(lines, [1, 3, 5, 6, 7]);
        assert_eq!(whole[0].1, ["a", "b"]);
        assert_eq!(whole[1].1, ["multi\nline", "q\"uote"]);
        assert_eq!(whole[2].1, [long.as_str(), "2"]);
        assert_eq!(whole[3].1.len(), 40);
        assert_eq!(whole[4], (7, vec!["last".to_string(), "row".to_string()], true));
        assert!(whole[..4].iter().all(|(_, _, at_end)| !at_end), "a line break ended them");
    }

    #[test]
    fn the_raw_bytes_of_a_record_run_to_the_end_when_it_does() {
        let input = std::io::Cursor::new(b"a,b\nc,\"open".to_vec());
        let mut records = Records::new(&Parser::new(b',', Some(b'"'), None), Box::new(input), true);
        assert!(records.next().unwrap());
        assert_eq!(records.raw(), b"a,b\n");
        assert!(records.next().unwrap());
        assert_eq!(records.raw(), b"c,\"open");
        assert!(records.ended_by_input());
        assert_eq!(records.fields().collect::<Vec<_>>(), [&b"c"[..], &b"open"[..]]);
    }
}
