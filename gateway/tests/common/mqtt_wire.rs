//! MQTT packets written and read byte by byte, for the tests that must send what no client
//! library sends (another identity's client id, a forged will, a topic alias out of range,
//! a DUP resend after a dropped connection) and see exactly what comes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// A packet as read: its type (the high nibble of the first byte), flags and body.
#[derive(Debug, Clone)]
pub struct Packet {
    pub kind: u8,
    pub flags: u8,
    pub body: Vec<u8>,
}

impl Packet {
    /// CONNACK: the reason code (v5) or return code (v3.1.1).
    pub fn connack_code(&self) -> u8 {
        assert_eq!(self.kind, CONNACK, "{self:?}");
        self.body[1]
    }

    pub fn session_present(&self) -> bool {
        self.body[0] & 1 == 1
    }

    /// PUBACK, PUBREC, DISCONNECT (v5): the reason code, 0 when left out.
    pub fn reason(&self) -> u8 {
        match self.kind {
            DISCONNECT => self.body.first().copied().unwrap_or(0),
            _ => self.body.get(2).copied().unwrap_or(0),
        }
    }

    /// PUBLISH: the payload (v5: after the properties).
    pub fn payload(&self, v5: bool) -> Vec<u8> {
        assert_eq!(self.kind, PUBLISH, "{self:?}");
        let topic = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let mut at = 2 + topic + if self.flags & 0x06 != 0 { 2 } else { 0 };
        if v5 {
            let (length, used) = varint(&self.body[at..]);
            at += used + length;
        }
        self.body[at..].to_vec()
    }
}

/// A CONNECT to write.
pub struct Connect<'a> {
    pub v5: bool,
    pub client_id: &'a str,
    pub credentials: Option<(&'a str, &'a str)>,
    pub clean_start: bool,
    /// v5 Session Expiry Interval (seconds); 0 leaves it out.
    pub session_expiry: u32,
    /// (topic, payload, qos)
    pub will: Option<(&'a str, &'a [u8], u8)>,
}

impl Default for Connect<'_> {
    fn default() -> Self {
        Connect {
            v5: true,
            client_id: "",
            credentials: None,
            clean_start: true,
            session_expiry: 0,
            will: None,
        }
    }
}

impl Connect<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some((_, _, qos)) = self.will {
            flags |= 0x04 | (qos << 3);
        }
        if self.credentials.is_some() {
            flags |= 0xC0;
        }
        let mut body = string(b"MQTT");
        body.push(if self.v5 { 5 } else { 4 });
        body.push(flags);
        body.extend_from_slice(&60u16.to_be_bytes());
        if self.v5 {
            let mut properties = Vec::new();
            if self.session_expiry > 0 {
                properties.push(0x11);
                properties.extend_from_slice(&self.session_expiry.to_be_bytes());
            }
            body.extend(length(properties.len()));
            body.extend(properties);
        }
        body.extend(string(self.client_id.as_bytes()));
        if let Some((topic, payload, _)) = self.will {
            if self.v5 {
                body.push(0);
            }
            body.extend(string(topic.as_bytes()));
            body.extend(string(payload));
        }
        if let Some((user, password)) = self.credentials {
            body.extend(string(user.as_bytes()));
            body.extend(string(password.as_bytes()));
        }
        frame(0x10, body)
    }
}

/// A PUBLISH to write. `alias`: a v5 Topic Alias property.
pub fn publish(
    v5: bool,
    topic: &str,
    payload: &[u8],
    qos: u8,
    packet_id: u16,
    dup: bool,
    alias: Option<u16>,
) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    if v5 {
        let mut properties = Vec::new();
        if let Some(alias) = alias {
            properties.push(0x23);
            properties.extend_from_slice(&alias.to_be_bytes());
        }
        body.extend(length(properties.len()));
        body.extend(properties);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (u8::from(dup) << 3) | (qos << 1), body)
}

pub fn subscribe(v5: bool, filter: &str, qos: u8, packet_id: u16) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend(string(filter.as_bytes()));
    body.push(qos);
    frame(0x82, body)
}

pub fn pubrel(packet_id: u16) -> Vec<u8> {
    frame(0x62, packet_id.to_be_bytes().to_vec())
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}

pub fn disconnect() -> Vec<u8> {
    vec![0xE0, 0]
}

/// A connection to the broker.
pub struct Client {
    pub stream: TcpStream,
    pub v5: bool,
}

impl Client {
    /// Connects, sends the CONNECT and reads the answer (a CONNACK, or `None` when the
    /// connection closed without one).
    pub fn connect(addr: SocketAddr, connect: &Connect) -> (Client, Option<Packet>) {
        let stream = TcpStream::connect(addr).unwrap();
        let mut client = Client { stream, v5: connect.v5 };
        client.send(&connect.encode());
        let connack = client.next(Duration::from_secs(20));
        (client, connack)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next packet within `wait`; `None` when the connection closed or nothing came.
    pub fn next(&mut self, wait: Duration) -> Option<Packet> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut first = [0u8; 1];
        self.stream.read_exact(&mut first).ok()?;
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let mut byte = [0u8; 1];
            self.stream.read_exact(&mut byte).ok()?;
            n |= ((byte[0] & 0x7F) as usize) << shift;
            shift += 7;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; n];
        self.stream.read_exact(&mut body).ok()?;
        Some(Packet { kind: first[0] >> 4, flags: first[0] & 0x0F, body })
    }

    /// The next packet of `kind` within `wait`, skipping others.
    pub fn expect(&mut self, kind: u8, wait: Duration) -> Packet {
        let started = std::time::Instant::now();
        loop {
            let left = wait.saturating_sub(started.elapsed()).max(Duration::from_millis(10));
            match self.next(left) {
                Some(p) if p.kind == kind => return p,
                Some(_) if started.elapsed() < wait => {}
                other => panic!("expected a packet of type {kind}, got {other:?}"),
            }
        }
    }

    /// Every packet until the connection is quiet for `wait` or closes.
    pub fn drain(&mut self, wait: Duration) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(p) = self.next(wait) {
            packets.push(p);
            if packets.len() > 1000 {
                break;
            }
        }
        packets
    }

    /// Whether the broker closed the connection (EOF) within `wait`.
    pub fn closed(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 256];
        let started = std::time::Instant::now();
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) if started.elapsed() < wait => {}
                Ok(_) => return false,
                Err(e) => {
                    return e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut;
                }
            }
        }
    }
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

fn length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

fn varint(bytes: &[u8]) -> (usize, usize) {
    let (mut n, mut used) = (0usize, 0);
    for (i, byte) in bytes.iter().enumerate().take(4) {
        n |= ((byte & 0x7F) as usize) << (7 * i);
        used = i + 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    (n, used)
}

fn frame(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(length(body.len()));
    out.extend(body);
    out
}
