//! A small CSV record reader: comma separated, RFC 4180 quotes (`""` escapes a quote, a quoted
//! field may span lines), CRLF or LF, optional UTF-8 byte order mark. It never fails as a
//! whole: a quoted field left open at the end of the file makes that one record malformed and
//! reading resumes on the next line, so one bad row cannot swallow the rest of a catalogue.

pub enum Record {
    Fields(Vec<String>),
    /// A record that could not be parsed; its first line, for messages.
    Malformed(String),
}

pub struct Records<'a> {
    text: &'a str,
    pos: usize,
}

pub fn records(text: &str) -> Records<'_> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Records { text, pos: 0 }
}

fn end_of_line(text: &str, from: usize) -> usize {
    text[from..].find('\n').map(|i| from + i + 1).unwrap_or(text.len())
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let t = self.text;
        // Blank lines carry no record.
        loop {
            if self.pos >= t.len() {
                return None;
            }
            let eol = end_of_line(t, self.pos);
            if t[self.pos..eol].trim().is_empty() {
                self.pos = eol;
            } else {
                break;
            }
        }
        let start = self.pos;
        let bytes = t.as_bytes();
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut i = start;
        let mut at_field_start = true;
        loop {
            if i >= bytes.len() {
                if field.ends_with('\r') {
                    field.pop();
                }
                fields.push(std::mem::take(&mut field));
                self.pos = i;
                return Some(Record::Fields(fields));
            }
            let c = bytes[i];
            if at_field_start && c == b'"' {
                // Quoted field: up to the closing quote, `""` is a literal quote.
                let mut j = i + 1;
                loop {
                    match t[j..].find('"') {
                        None => {
                            let eol = end_of_line(t, start);
                            self.pos = eol;
                            return Some(Record::Malformed(t[start..eol].trim_end().to_string()));
                        }
                        Some(k) => {
                            field.push_str(&t[j..j + k]);
                            j += k + 1;
                            if bytes.get(j) == Some(&b'"') {
                                field.push('"');
                                j += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                i = j;
                at_field_start = false;
                continue;
            }
            at_field_start = false;
            match c {
                b',' => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                    i += 1;
                }
                b'\n' => {
                    if field.ends_with('\r') {
                        field.pop();
                    }
                    fields.push(std::mem::take(&mut field));
                    self.pos = i + 1;
                    return Some(Record::Fields(fields));
                }
                _ => {
                    // Copy the run of ordinary characters up to the next separator at once
                    // (keeps multi-byte UTF-8 intact).
                    let run_end = t[i..].find([',', '\n']).map(|k| i + k).unwrap_or(t.len());
                    field.push_str(&t[i..run_end]);
                    i = run_end;
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
}
