//! The records of a catalogue's CSV file (`styles.csv`, `captions.csv`), read by the `csv`
//! crate: comma separated, RFC 4180 quotes (`""` escapes a quote, a quoted field may span
//! lines), LF or CRLF, any number of fields per record, an optional UTF-8 byte order mark.
//!
//! Reading never fails as a whole: a record the crate reports an error for, or a quoted field
//! left open at the end of the file, makes that one record malformed and reading resumes on
//! the next line, so one bad row cannot swallow the rest of a catalogue. Lines holding only
//! whitespace carry no record.

pub enum Record {
    Fields(Vec<String>),
    /// A record that could not be parsed; its first line, for messages.
    Malformed(String),
}

pub struct Records<'a> {
    text: &'a str,
    /// Bytes of the byte order mark at the start of `text` (the crate skips it).
    bom: usize,
    /// Where in `text` the current reader started.
    base: usize,
    reader: csv::Reader<&'a [u8]>,
    record: csv::StringRecord,
}

fn reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    // `\n` ends a record; a `\r` before it is taken off the last field below, so a lone `\r`
    // inside a line stays data.
    csv::ReaderBuilder::new().has_headers(false).flexible(true).terminator(csv::Terminator::Any(b'\n')).from_reader(bytes)
}

pub fn records(text: &str) -> Records<'_> {
    let bom = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    Records { text, bom, base: 0, reader: reader(text.as_bytes()), record: csv::StringRecord::new() }
}

fn end_of_line(text: &str, from: usize) -> usize {
    text[from..].find('\n').map(|i| from + i + 1).unwrap_or(text.len())
}

/// Whether the last field of `raw`, the final record of the file, is a quoted field that
/// never closed. The crate ends such a field silently at the end of the input; reading on
/// past it shows which case this is: a closed record is followed by a second one. (The
/// leading blank line keeps the crate from taking a byte order mark off `raw`.)
fn ends_inside_quotes(raw: &str) -> bool {
    let probe = format!("\n{raw}\n,");
    let mut r = reader(probe.as_bytes());
    let mut rec = csv::StringRecord::new();
    matches!(r.read_record(&mut rec), Ok(true)) && !matches!(r.read_record(&mut rec), Ok(true))
}

impl Records<'_> {
    /// The record starting at or after `start` is malformed: report its first line and go on
    /// reading from the line after it.
    fn malformed_from(&mut self, start: usize) -> Record {
        let t = self.text;
        let mut line = start;
        while line < t.len() && t[line..end_of_line(t, line)].trim().is_empty() {
            line = end_of_line(t, line);
        }
        let eol = end_of_line(t, line);
        // The new reader starts on the line break itself, a blank line it skips: starting
        // after it would let the crate take a byte order mark off the next line.
        self.base = if t[..eol].ends_with('\n') { eol - 1 } else { eol };
        self.reader = reader(&t.as_bytes()[self.base..]);
        Record::Malformed(t[line..eol].trim_end().to_string())
    }
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            let start = (self.base + self.reader.position().byte() as usize).max(self.bom);
            match self.reader.read_record(&mut self.record) {
                Ok(false) => return None,
                Err(_) => return Some(self.malformed_from(start)),
                Ok(true) => {
                    let end = self.base + self.reader.position().byte() as usize;
                    let raw = &self.text[start..end.min(self.text.len())];
                    if raw.trim().is_empty() {
                        continue;
                    }
                    if end >= self.text.len() && ends_inside_quotes(raw) {
                        return Some(self.malformed_from(start));
                    }
                    let mut fields: Vec<String> = self.record.iter().map(str::to_string).collect();
                    if let Some(last) = fields.last_mut() {
                        if last.ends_with('\r') {
                            last.pop();
                        }
                    }
                    return Some(Record::Fields(fields));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        records(text)
            .map(|r| match r {
                Record::Fields(f) => f,
                Record::Malformed(line) => vec![format!("MALFORMED {line}")],
            })
            .collect()
    }

    #[test]
    fn quotes_crlf_blank_lines_and_unclosed_quotes() {
        let got = fields("\u{feff}a,b\r\n\n\"x, \"\"y\"\"\",2\n\"multi\nline\",3\n5\" shorts,4,\n\"open,5\nlast,6");
        assert_eq!(
            got,
            vec![vec!["a", "b"], vec!["x, \"y\"", "2"], vec!["multi\nline", "3"], vec!["5\" shorts", "4", ""], vec!["MALFORMED \"open,5"], vec!["last", "6"],]
        );
    }

    /// Corners where the crate's defaults differ from what the catalogue readers always did
    /// (whitespace-only lines, a lone `\r`, a byte order mark after a malformed line, an
    /// unclosed quote on the first line); the expected values are the hand-written reader's
    /// this one replaced.
    #[test]
    fn corners_read_as_before() {
        assert_eq!(fields("\u{feff}  \n\r\nid,name\n   \n\"a\"\"b\",\"c\r\nd\"\r\n"), [vec!["id", "name"], vec!["a\"b", "c\r\nd"]]);
        assert_eq!(fields("x,\"open\n\u{feff}y,1\n"), [vec!["MALFORMED x,\"open"], vec!["\u{feff}y", "1"]]);
        assert_eq!(fields("a,\"b\"c\"d\",e\na\rb,c\n\"multi\nline\""), [vec!["a", "bc\"d\"", "e"], vec!["a\rb", "c"], vec!["multi\nline"]]);
        assert_eq!(fields("\u{feff}\"open,1\nnext,2\r\n"), [vec!["MALFORMED \"open,1"], vec!["next", "2"]]);
        assert_eq!(fields("\"\"\n\"closed\"\"\",\n"), [vec![""], vec!["closed\"", ""]]);
        assert_eq!(fields("a\n\u{feff}"), [vec!["a"], vec!["\u{feff}"]]);
    }
}
