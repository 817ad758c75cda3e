//! An incremental Server-Sent Events parser (the `text/event-stream` framing only).

/// An incremental Server-Sent Events parser.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Vec<u8>,
    has_data: bool,
}

pub struct SseEvent {
    pub event: String,
    pub data: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        for &b in chunk {
            if b == b'\n' {
                self.end_line(out);
            } else {
                self.line.push(b);
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if self.has_data || !self.event.is_empty() {
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive)
        }
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let mut value = &line[(colon + 1).min(line.len())..];
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match &line[..colon] {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(b"event: data\ndata: ab", &mut out);
        p.feed(
            b"c\ndata: d\r\n\r\n: keep-alive\n\nevent:control\ndata:{}\n\n",
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].event.as_str(), &out[0].data[..]),
            ("data", &b"abc\nd"[..])
        );
        assert_eq!(
            (out[1].event.as_str(), &out[1].data[..]),
            ("control", &b"{}"[..])
        );
    }
}
