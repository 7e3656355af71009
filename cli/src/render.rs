//! Human output: the inspect view (a key/value header and an aligned member table with
//! relative ages), and the colour policy shared by every command.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use shmlock::{MemberInfo, PageOrigin, Snapshot};

use crate::Target;

/// Whether to colour, decided once per stream: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// The policy for a stream that is (or is not) a terminal.
    pub fn new(is_terminal: bool) -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint {
            on: is_terminal && !no_color,
        }
    }

    /// The policy for standard output.
    pub fn stdout() -> Paint {
        Paint::new(std::io::stdout().is_terminal())
    }

    /// The policy for standard error.
    pub fn stderr() -> Paint {
        Paint::new(std::io::stderr().is_terminal())
    }

    /// `text` wrapped in the SGR `code` (when colouring).
    pub fn sgr(&self, code: &str, text: &str) -> String {
        if self.on && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.sgr("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.sgr("2", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.sgr("32", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.sgr("1;31", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.sgr("1;33", text)
    }
    /// What `watch` uses for something that just changed.
    pub fn changed(&self, text: &str) -> String {
        self.sgr("1;7;33", text)
    }
}

/// A duration for people: "85 µs", "120 ms", "1.5 s", "42 s", "3 min 20 s", "2 h 5 min",
/// "3 d 4 h".
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d < Duration::from_secs(10) && d.subsec_nanos() != 0 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    } else {
        format!("{} d {} h", s / 86_400, s % 86_400 / 3600)
    }
}

/// An age the page records in whole seconds: "<1 s" rather than a false "0 µs".
pub fn age_secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        "<1 s".to_string()
    } else {
        age(Duration::from_secs(d.as_secs()))
    }
}

/// `n thing` or `n things`.
pub fn count(n: impl Into<u64>, thing: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// What `watch` wants drawn as just changed.
#[derive(Debug, Default)]
pub struct Highlights {
    /// The writer line (claim, release, takeover, death).
    pub writer: bool,
    /// The total reader count.
    pub readers: bool,
    /// The waiting-claimant count.
    pub waiting: bool,
    /// Member rows, by (index, token).
    pub members: HashSet<(usize, u32)>,
}

/// Left or right alignment of a table column.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Pads cells to column widths computed from their plain text, then colours them: escape
/// codes never disturb the alignment.
struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<(String, Style)>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Good,
    Bad,
    Changed,
}

impl Table {
    fn render(&self, paint: &Paint, indent: &str) -> Vec<String> {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for row in &self.rows {
            for (w, (text, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(text.chars().count());
            }
        }
        let pad = |text: &str, width: usize, align: Align| match align {
            Align::Left => format!("{text:<width$}"),
            Align::Right => format!("{text:>width$}"),
        };
        let last = self.columns.len() - 1;
        let mut lines = Vec::new();
        let header: Vec<String> = self
            .columns
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, ((h, a), &w))| pad(h, if i == last { 0 } else { w }, *a))
            .collect();
        lines.push(format!(
            "{indent}{}",
            paint.bold(header.join("  ").trim_end())
        ));
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&self.columns)
                .zip(&widths)
                .enumerate()
                .map(|(i, (((text, style), (_, align)), &w))| {
                    let padded = pad(text, if i == last { 0 } else { w }, *align);
                    // Colour the text, not the padding, so highlights hug the words.
                    let start = padded.len() - padded.trim_start().len();
                    let (lead, rest) = padded.split_at(start);
                    let body = rest.trim_end();
                    let tail = &rest[body.len()..];
                    let body = match style {
                        Style::Plain => body.to_string(),
                        Style::Good => paint.green(body),
                        Style::Bad => paint.red(body),
                        Style::Changed => paint.changed(body),
                    };
                    format!("{lead}{body}{tail}")
                })
                .collect();
            lines.push(format!("{indent}{}", cells.join("  ").trim_end()));
        }
        lines
    }
}

fn member_row(s: &Snapshot, m: &MemberInfo, changed: bool) -> Vec<(String, Style)> {
    let is_owner = s.owner.as_ref().is_some_and(|o| o.index == Some(m.index));
    let or = |style: Style| if changed { Style::Changed } else { style };
    let note = match (is_owner, m.alive) {
        (true, true) => "writer".to_string(),
        (true, false) => "dead writer: the next claim takes over".to_string(),
        (false, false) => "dead: waits to be reaped".to_string(),
        (false, true) if m.is_self => "this process".to_string(),
        (false, true) => String::new(),
    };
    vec![
        (m.index.to_string(), or(Style::Plain)),
        (m.pid.to_string(), or(Style::Plain)),
        if m.alive {
            ("alive".into(), or(Style::Good))
        } else {
            ("DEAD".into(), or(Style::Bad))
        },
        (m.readers.to_string(), or(Style::Plain)),
        (
            m.oldest_pin.map_or("-".to_string(), |v| v.to_string()),
            Style::Plain,
        ),
        (format!("{} ago", age_secs(m.process_age)), Style::Plain),
        (
            note,
            if m.alive {
                or(Style::Plain)
            } else {
                or(Style::Bad)
            },
        ),
    ]
}

/// The inspect view: lock file, format, writer, counts, then the member table. Lines
/// without a trailing newline (so `watch` can clear each to the end of the line).
pub fn view(target: &Target, s: &Snapshot, paint: &Paint, hl: &Highlights) -> Vec<String> {
    let mut out = Vec::new();
    let key = |k: &str| paint.bold(&format!("{k:<11}"));
    let lit = |on: bool, text: String| if on { paint.changed(&text) } else { text };

    let mut file = target.lock.display().to_string();
    if let Some(data) = &target.data {
        file.push_str(&format!("  (lock file of {})", data.display()));
    }
    out.push(format!("{} {file}", key("lock file")));

    let created = SystemTime::now()
        .duration_since(s.created_at)
        .map(|d| format!("{} ago", age_secs(d)))
        .unwrap_or_else(|_| "in the future (the wall clock went back)".into());
    let mut format = format!("v{}, ", s.format_version);
    format.push_str(&match s.origin {
        PageOrigin::Created => format!("created {created}"),
        PageOrigin::Healed => {
            format!("healed {created} (a damaged page was rewritten; generations restarted from the clock)")
        }
    });
    if s.format_version != s.supported_version {
        format.push_str(&format!(
            " (this shmlock supports v{})",
            s.supported_version
        ));
    }
    out.push(format!("{} {format}", key("format")));

    match &s.owner {
        None => out.push(format!(
            "{} {}",
            key("writer"),
            lit(
                hl.writer,
                format!("none (last generation {})", s.generation)
            )
        )),
        Some(o) if o.index.is_none() => out.push(format!("{} {}", key("writer"), {
            let text = format!(
                "damaged owner word (generation {}): the next claim takes over",
                o.generation
            );
            if hl.writer {
                paint.changed(&text)
            } else {
                paint.red(&text)
            }
        })),
        Some(o) => {
            // No colour inside a highlight: its reset would end the highlight.
            let state = match (o.alive, hl.writer) {
                (true, true) => "alive".to_string(),
                (false, true) => "DEAD".to_string(),
                (true, false) => paint.green("alive"),
                (false, false) => paint.red("DEAD"),
            };
            let head = format!(
                "pid {} (member {}), {state}, generation {}",
                o.pid,
                o.index.unwrap_or_default(),
                o.generation
            );
            out.push(format!("{} {}", key("writer"), lit(hl.writer, head)));
            let mut detail = match o.heartbeat_age {
                Some(a) => format!("heartbeat {} ago", age(a)),
                None => "no heartbeat since its claim".to_string(),
            };
            if !o.alive {
                detail.push_str(&paint.red("; the next claim takes over"));
            }
            out.push(format!("{} {detail}", key("")));
        }
    }
    out.push(format!("{} {}", key("takeovers"), s.takeovers));
    out.push(format!(
        "{} {}",
        key("waiting"),
        lit(hl.waiting, count(s.waiting_claimants, "claimant"))
    ));
    let live = s.live_members().count();
    let dead = s.dead_members().count();
    out.push(format!(
        "{} {} across {}",
        key("readers"),
        lit(hl.readers, s.reader_count.to_string()),
        count(live as u64, "live member")
    ));
    if s.members.is_empty() {
        out.push(format!("{} none (no process has it open)", key("members")));
        return out;
    }
    let dead_text = if dead == 0 {
        "0 dead".to_string()
    } else {
        paint.red(&format!("{dead} dead"))
    };
    out.push(format!(
        "{} {} registered: {live} alive, {dead_text}",
        key("members"),
        s.members.len()
    ));
    out.push(String::new());
    let table = Table {
        columns: vec![
            ("MEMBER", Align::Right),
            ("PID", Align::Right),
            ("STATE", Align::Left),
            ("READERS", Align::Right),
            ("OLDEST PIN", Align::Right),
            ("PROCESS STARTED", Align::Right),
            ("NOTE", Align::Left),
        ],
        rows: s
            .members
            .iter()
            .map(|m| member_row(s, m, hl.members.contains(&(m.index, m.token))))
            .collect(),
    };
    out.extend(table.render(paint, ""));
    if dead > 0 {
        out.push(String::new());
        let (members_wait, them) = if dead == 1 {
            ("member waits", "it")
        } else {
            ("members wait", "them")
        };
        out.push(format!(
            "{dead} dead {members_wait} to be reaped (any new opener clears {them}), or run:"
        ));
        out.push(format!("  shmlock reap {}", target.given.display()));
    }
    out
}

/// The view as one string with newlines.
pub fn view_text(target: &Target, s: &Snapshot, paint: &Paint) -> String {
    let mut text = view(target, s, paint, &Highlights::default()).join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally_at_every_scale() {
        let cases = [
            (Duration::from_nanos(85_400), "85 µs"),
            (Duration::from_micros(120_500), "120 ms"),
            (Duration::from_millis(1_500), "1.5 s"),
            (Duration::from_secs(3), "3 s"),
            (Duration::from_secs(42), "42 s"),
            (Duration::from_secs(200), "3 min 20 s"),
            (Duration::from_secs(7_500), "2 h 5 min"),
            (Duration::from_secs(3 * 86_400 + 4 * 3600), "3 d 4 h"),
        ];
        for (d, want) in cases {
            assert_eq!(age(d), want, "{d:?}");
        }
    }

    #[test]
    fn whole_second_ages_never_claim_microseconds() {
        assert_eq!(age_secs(Duration::ZERO), "<1 s");
        assert_eq!(age_secs(Duration::from_millis(999)), "<1 s");
        assert_eq!(age_secs(Duration::from_millis(2_700)), "2 s");
    }

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(Paint { on: false }.red("x"), "x");
        assert_eq!(Paint { on: true }.red("x"), "\x1b[1;31mx\x1b[0m");
    }
}
