//! All output goes through one printer: data to stdout, messages to stderr,
//! JSON when asked, colour only on a terminal without `NO_COLOR`.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use serde::Serialize;

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const HINT: Style = AnsiColor::Cyan.on_default().bold();
const NOTE: Style = AnsiColor::Blue.on_default().bold();

pub struct Printer {
    out: Watched,
    err: Box<dyn Write>,
    pub json: bool,
}

/// Standard output, whose reader may go away (`rewind history | head`):
/// from the first write that finds the pipe broken on, what is written is
/// dropped, so that the command still ends as it would have, with its own
/// outcome and exit code, and its messages still reach standard error.
struct Watched {
    inner: Box<dyn Write>,
    closed: bool,
}

impl Watched {
    /// `result` of a write to the reader, or `dropped` once it is gone.
    fn unless_gone<T>(&mut self, result: io::Result<T>, dropped: T) -> io::Result<T> {
        match result {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(dropped)
            }
            result => result,
        }
    }
}

impl Write for Watched {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(bytes.len());
        }
        let result = self.inner.write(bytes);
        self.unless_gone(result, bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush();
        self.unless_gone(result, ())
    }
}

impl Printer {
    /// A printer over two writers; anstream writers decide colour, plain
    /// ones get none.
    pub fn new(json: bool, out: Box<dyn Write>, err: Box<dyn Write>) -> Printer {
        Printer {
            out: Watched {
                inner: out,
                closed: false,
            },
            err,
            json,
        }
    }

    /// Data: a rendered block of text, to stdout.
    pub fn data(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// The data stream itself, for long streamed output (exports).
    pub fn out(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    /// Data as pretty JSON, to stdout.
    pub fn json<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        self.data(&format!("{text}\n"))
    }

    /// A message for the person at the terminal (stderr).
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.err, "{NOTE}note:{NOTE:#} {text}");
    }

    pub fn warning(&mut self, text: &str) {
        let _ = writeln!(self.err, "{WARNING}warning:{WARNING:#} {text}");
    }

    /// A plain progress or status line (stderr).
    pub fn status(&mut self, text: &str) {
        let _ = writeln!(self.err, "{text}");
    }

    /// Renders an error with its causes and hints.
    pub fn error(&mut self, message: &str, causes: &[String], hints: &[String]) {
        let _ = writeln!(self.err, "{ERROR}error:{ERROR:#} {message}");
        for cause in causes {
            let _ = writeln!(self.err, "  caused by: {cause}");
        }
        for hint in hints {
            let _ = writeln!(self.err, "{HINT}hint:{HINT:#} {hint}");
        }
    }
}

/// Renders rows as a plain table with columns padded to their widest cell;
/// the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate().take(columns) {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let mut line = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[index] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(header.to_vec());
    for row in rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    out
}
