//! Human output: the inspect view (a key/value header and an aligned member table with
//! relative ages), the colour policy shared by every command, and fitting lines to a
//! terminal's width.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use shmlock::{MemberInfo, PageOrigin, Snapshot};

use crate::Target;

/// `--color`: when to colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set to a non-empty value.
    #[default]
    Auto,
    /// Always, even into a pipe or a file, and even with `NO_COLOR` set (the command line
    /// wins over the environment).
    Always,
    /// Never.
    Never,
}

static COLOR_CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Record the user's `--color` (once, before anything is printed).
pub fn set_color_choice(choice: ColorChoice) {
    let _ = COLOR_CHOICE.set(choice);
}

/// Whether to colour, decided once per stream from `--color`: with `auto` (the default)
/// only on a terminal, and never when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// The policy for a stream that is (or is not) a terminal.
    pub fn new(is_terminal: bool) -> Paint {
        let on = match COLOR_CHOICE.get().copied().unwrap_or_default() {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                is_terminal && !no_color
            }
        };
        Paint { on }
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

/// The columns `text` takes on a terminal: every character but escape sequences
/// (`ESC [ … letter`) counts one.
#[cfg_attr(not(unix), allow(dead_code))] // used by `watch` (Unix only)
pub fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            skip_escape(&mut chars);
        } else {
            width += 1;
        }
    }
    width
}

#[cfg_attr(not(unix), allow(dead_code))] // used by `watch` (Unix only)
fn skip_escape(chars: &mut std::str::Chars<'_>) {
    if chars.next() == Some('[') {
        for c in chars.by_ref() {
            if c.is_ascii_alphabetic() {
                break;
            }
        }
    }
}

/// `text` cut to at most `width` visible columns, ending in `…` when cut; escape sequences
/// are kept whole and a cut coloured line ends with a reset.
#[cfg_attr(not(unix), allow(dead_code))] // used by `watch` (Unix only)
pub fn elide(text: &str, width: usize) -> String {
    if visible_width(text) <= width {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    let mut coloured = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            let rest = chars.as_str();
            skip_escape(&mut chars);
            out.push('\x1b');
            out.push_str(&rest[..rest.len() - chars.as_str().len()]);
            coloured = true;
        } else if used + 1 < width {
            out.push(c);
            used += 1;
        } else {
            break;
        }
    }
    if width > 0 {
        out.push('…');
    }
    if coloured {
        out.push_str("\x1b[0m");
    }
    out
}

/// How to run this program again in a hint: `shmlock` when that name on `PATH` is this
/// executable, else the path it was started by (`target/release/shmlock` under
/// `cargo run`), so a hint never names a command the shell cannot find.
pub fn invoked_as() -> String {
    const NAME: &str = "shmlock";
    static INVOKED: OnceLock<String> = OnceLock::new();
    INVOKED
        .get_or_init(|| {
            let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
            let on_path = std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| {
                    std::fs::canonicalize(dir.join(NAME))
                        .ok()
                        .is_some_and(|p| Some(p) == me)
                })
            });
            if on_path {
                return NAME.to_string();
            }
            let arg0 = std::env::args_os().next().map(std::path::PathBuf::from);
            let path = match arg0 {
                Some(p) if p.components().count() > 1 => p,
                _ => match &me {
                    Some(me) => me.clone(),
                    None => return NAME.to_string(),
                },
            };
            let text = path.display().to_string();
            if text.contains(char::is_whitespace) {
                format!("'{text}'")
            } else {
                text
            }
        })
        .clone()
}

/// The first of `candidates` (most detailed first) that fits in `width` columns, else the
/// last: how a line that carries the generation (the fencing token, the one number an
/// operator copies) gives up its other words on a narrow terminal instead of having the
/// token cut. Without a width, the first.
pub fn fit(candidates: Vec<String>, width: Option<usize>) -> String {
    let last = candidates.len().saturating_sub(1);
    candidates
        .into_iter()
        .enumerate()
        .find(|(i, line)| *i == last || width.is_none_or(|w| visible_width(line) <= w))
        .map(|(_, line)| line)
        .unwrap_or_default()
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
    /// The published version.
    pub published: bool,
    /// The oldest pin.
    pub oldest: bool,
    /// The total reader count.
    pub readers: bool,
    /// The waiting counts.
    pub waiting: bool,
    /// Member rows, by (index, token).
    pub members: HashSet<(usize, u32)>,
}

impl Highlights {
    /// Everything `other` highlights, added to this.
    #[cfg_attr(not(unix), allow(dead_code))] // used by `watch` (Unix only)
    pub fn absorb(&mut self, other: &Highlights) {
        self.writer |= other.writer;
        self.published |= other.published;
        self.oldest |= other.oldest;
        self.readers |= other.readers;
        self.waiting |= other.waiting;
        self.members.extend(other.members.iter().copied());
    }
}

/// Left or right alignment of a table column.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// One table column. `drop` orders what goes first when the table is wider than the
/// terminal (higher goes first; 0 never goes); a `wide` column is shown only when a width
/// is known and leaves room for it.
struct Column {
    title: &'static str,
    align: Align,
    drop: u8,
    wide: bool,
}

const fn column(title: &'static str, align: Align, drop: u8, wide: bool) -> Column {
    Column {
        title,
        align,
        drop,
        wide,
    }
}

/// The member table's columns, in order.
const MEMBER_COLUMNS: [Column; 10] = [
    column("MEMBER", Align::Right, 0, false),
    column("PID", Align::Right, 0, false),
    column("STATE", Align::Left, 0, false),
    column("READERS", Align::Right, 0, false),
    column("OLDEST PIN", Align::Right, 1, false),
    column("HEARTBEAT", Align::Right, 3, false),
    column("LEASE", Align::Right, 4, false),
    column("PROCESS STARTED", Align::Right, 5, false),
    column("TOKEN", Align::Right, 6, true),
    column("NOTE", Align::Left, 2, false),
];

/// Pads cells to column widths computed from their plain text, then colours them: escape
/// codes never disturb the alignment.
struct Table {
    columns: &'static [Column],
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
    /// The header line and one line per row. With a `width`, columns are dropped (in
    /// their `drop` order) until the table fits, and `wide` ones shown only if they fit.
    fn render(&self, paint: &Paint, width: Option<usize>) -> Vec<String> {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|c| c.title.chars().count())
            .collect();
        for row in &self.rows {
            for (w, (text, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(text.chars().count());
            }
        }
        let mut shown: Vec<bool> = self
            .columns
            .iter()
            .map(|c| !c.wide || width.is_some())
            .collect();
        let total = |shown: &[bool]| -> usize {
            let (sum, n) = widths
                .iter()
                .zip(shown)
                .filter(|(_, s)| **s)
                .fold((0usize, 0usize), |(sum, n), (w, _)| (sum + w, n + 1));
            sum + 2 * n.saturating_sub(1)
        };
        if let Some(limit) = width {
            while total(&shown) > limit {
                let victim = (0..self.columns.len())
                    .filter(|&i| shown[i] && self.columns[i].drop > 0)
                    .max_by_key(|&i| self.columns[i].drop);
                match victim {
                    Some(i) => shown[i] = false,
                    None => break,
                }
            }
        }
        let last = (0..self.columns.len()).rfind(|&i| shown[i]).unwrap_or(0);
        let pad = |text: &str, width: usize, align: Align| match align {
            Align::Left => format!("{text:<width$}"),
            Align::Right => format!("{text:>width$}"),
        };
        let mut lines = Vec::new();
        let header: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| shown[*i])
            .map(|(i, c)| pad(c.title, if i == last { 0 } else { widths[i] }, c.align))
            .collect();
        lines.push(paint.bold(header.join("  ").trim_end()));
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .filter(|(i, _)| shown[*i])
                .map(|(i, (text, style))| {
                    let w = if i == last { 0 } else { widths[i] };
                    let padded = pad(text, w, self.columns[i].align);
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
            lines.push(cells.join("  ").trim_end().to_string());
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
    let dash = || "-".to_string();
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
            m.oldest_pin.map_or_else(dash, |v| v.to_string()),
            or(Style::Plain),
        ),
        (
            m.heartbeat_age
                .map_or_else(dash, |a| format!("{} ago", age(a))),
            Style::Plain,
        ),
        (m.declared_lease.map_or_else(dash, age), Style::Plain),
        (format!("{} ago", age_secs(m.process_age)), Style::Plain),
        (m.token.to_string(), Style::Plain),
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

/// How to draw the view.
#[derive(Debug, Default)]
pub struct ViewOptions {
    /// The terminal's width, when known: the table drops columns to fit (lines longer
    /// than that are the caller's to cut).
    pub width: Option<usize>,
    /// Say "or run: shmlock reap PATH" under dead members (not when the file is about to
    /// be deleted, as in the demo's temporary directory).
    pub reap_hint: bool,
    /// What just changed.
    pub highlights: Highlights,
}

/// A line of the header or footer, with the order in which `watch` drops it when the
/// terminal is too short: higher goes first, 0 never goes.
pub type Ranked = (u8, String);

/// The inspect view in parts, so `watch` can fit it to a terminal.
pub struct View {
    /// Lock file, format, writer, snapshots, counts.
    pub head: Vec<Ranked>,
    /// The member table: its header line, then one line per member (empty: no members).
    pub table: Vec<String>,
    /// Under the table: what to do about dead members.
    pub foot: Vec<Ranked>,
}

impl View {
    /// Every line, in order.
    pub fn lines(self) -> Vec<String> {
        let mut out: Vec<String> = self.head.into_iter().map(|(_, l)| l).collect();
        out.extend(self.table);
        out.extend(self.foot.into_iter().map(|(_, l)| l));
        out
    }
}

/// Drop ranks of the header lines (`watch` drops the highest first).
pub mod rank {
    pub const KEEP: u8 = 0;
    pub const READERS: u8 = 1;
    pub const COUNTS: u8 = 2;
    pub const LOCK_FILE: u8 = 3;
    pub const FORMAT: u8 = 4;
    pub const TAKEOVERS: u8 = 5;
    pub const SPACER: u8 = 6;
}

/// The writer's second line: heartbeat age and the lease it declared, side by side.
fn heartbeat_and_lease(o: &shmlock::OwnerInfo) -> String {
    let heartbeat = match o.heartbeat_age {
        Some(a) => format!("heartbeat {} ago", age(a)),
        None => "no heartbeat since its claim".to_string(),
    };
    let lease = match o.lease {
        Some(l) => format!("declared lease {}", age(l)),
        None => "no lease".to_string(),
    };
    format!("{heartbeat}; {lease}")
}

/// The inspect view: lock file, format, writer, snapshots, counts, then the member table.
/// Lines without a trailing newline (so `watch` can clear each to the end of the line).
pub fn view(target: &Target, s: &Snapshot, paint: &Paint, opts: &ViewOptions) -> View {
    let hl = &opts.highlights;
    let mut head: Vec<Ranked> = Vec::new();
    let key = |k: &str| paint.bold(&format!("{k:<11}"));
    let lit = |on: bool, text: String| if on { paint.changed(&text) } else { text };

    let file = target.lock.display().to_string();
    let mut files = vec![format!("{} {file}", key("lock file"))];
    if let Some(data) = &target.data {
        // Narrow terminal: the data file's name goes first.
        files.insert(
            0,
            format!(
                "{} {file}  (lock file of {})",
                key("lock file"),
                data.display()
            ),
        );
    }
    head.push((rank::LOCK_FILE, fit(files, opts.width)));

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
        _ => format!("initialised {created}"),
    });
    if s.format_version != s.supported_version {
        format.push_str(&format!(
            " (this shmlock supports v{})",
            s.supported_version
        ));
    }
    head.push((rank::FORMAT, format!("{} {format}", key("format"))));

    match &s.owner {
        None => head.push((
            rank::KEEP,
            format!(
                "{} {}",
                key("writer"),
                lit(
                    hl.writer,
                    format!("none (last generation {})", s.generation)
                )
            ),
        )),
        Some(o) if o.index.is_none() => head.push((
            rank::KEEP,
            format!("{} {}", key("writer"), {
                let text = format!(
                    "damaged owner word (generation {}): the next claim takes over",
                    o.generation
                );
                if hl.writer {
                    paint.changed(&text)
                } else {
                    paint.red(&text)
                }
            }),
        )),
        Some(o) => {
            // No colour inside a highlight: its reset would end the highlight.
            let state = match (o.alive, hl.writer) {
                (true, true) => "alive".to_string(),
                (false, true) => "DEAD".to_string(),
                (true, false) => paint.green("alive"),
                (false, false) => paint.red("DEAD"),
            };
            // Narrow terminal: the member index goes first, then the pid, then the state;
            // the generation never does.
            let g = o.generation;
            let first = fit(
                [
                    format!(
                        "pid {} (member {}), {state}, generation {g}",
                        o.pid,
                        o.index.unwrap_or_default()
                    ),
                    format!("pid {}, {state}, generation {g}", o.pid),
                    format!("{state}, generation {g}"),
                    format!("generation {g}"),
                ]
                .into_iter()
                .map(|text| format!("{} {}", key("writer"), lit(hl.writer, text)))
                .collect(),
                opts.width,
            );
            head.push((rank::KEEP, first));
            let mut detail = heartbeat_and_lease(o);
            if !o.alive {
                detail.push_str(&paint.red("; the next claim takes over"));
            }
            head.push((rank::KEEP, format!("{} {detail}", key(""))));
        }
    }
    let oldest = match s.oldest_pinned {
        Some(v) => format!("oldest pin {v}"),
        None => "no pins".to_string(),
    };
    head.push((
        rank::KEEP,
        format!(
            "{} published {}; {}",
            key("snapshots"),
            lit(hl.published, s.published.to_string()),
            lit(hl.oldest, oldest)
        ),
    ));
    head.push((
        rank::TAKEOVERS,
        format!("{} {}", key("takeovers"), s.takeovers),
    ));
    head.push((
        rank::COUNTS,
        format!(
            "{} {}",
            key("waiting"),
            lit(
                hl.waiting,
                format!(
                    "{}, {} for a publish, {} for readers",
                    count(s.waiting_claimants, "claimant"),
                    s.waiting_for_publish,
                    s.waiting_for_readers
                )
            )
        ),
    ));
    let live = s.live_members().count();
    let dead = s.dead_members().count();
    head.push((
        rank::READERS,
        format!(
            "{} {} across {}",
            key("readers"),
            lit(hl.readers, s.reader_count.to_string()),
            count(live as u64, "live member")
        ),
    ));
    if s.members.is_empty() {
        head.push((
            rank::COUNTS,
            format!("{} none (no process has it open)", key("members")),
        ));
        return View {
            head,
            table: Vec::new(),
            foot: Vec::new(),
        };
    }
    let dead_text = if dead == 0 {
        "0 dead".to_string()
    } else {
        paint.red(&format!("{dead} dead"))
    };
    head.push((
        rank::COUNTS,
        format!(
            "{} {} registered: {live} alive, {dead_text}",
            key("members"),
            s.members.len()
        ),
    ));
    head.push((rank::SPACER, String::new()));
    let table = Table {
        columns: &MEMBER_COLUMNS,
        rows: s
            .members
            .iter()
            .map(|m| member_row(s, m, hl.members.contains(&(m.index, m.token))))
            .collect(),
    }
    .render(paint, opts.width);
    let mut foot = Vec::new();
    if dead > 0 {
        foot.push((rank::SPACER, String::new()));
        let (members_wait, them) = if dead == 1 {
            ("member waits", "it")
        } else {
            ("members wait", "them")
        };
        let mut text =
            format!("{dead} dead {members_wait} to be reaped (any new opener clears {them})");
        if opts.reap_hint {
            text.push_str(", or run:");
            foot.push((rank::COUNTS, text));
            foot.push((
                rank::COUNTS,
                format!("  {} reap {}", invoked_as(), target.given.display()),
            ));
        } else {
            foot.push((rank::COUNTS, text));
        }
    }
    View { head, table, foot }
}

/// The view as one string with newlines (for `inspect`): the reap hint, and every column
/// that fits `width` (a terminal's; `None`, into a pipe: every column but the wide ones).
pub fn view_text(target: &Target, s: &Snapshot, paint: &Paint, width: Option<usize>) -> String {
    let opts = ViewOptions {
        width,
        reap_hint: true,
        ..ViewOptions::default()
    };
    let mut text = view(target, s, paint, &opts).lines().join("\n");
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

    #[test]
    fn elide_counts_columns_not_escape_codes() {
        let red = Paint { on: true }.red("abcdef");
        assert_eq!(visible_width(&red), 6);
        assert_eq!(elide(&red, 6), red);
        let cut = elide(&red, 4);
        assert_eq!(visible_width(&cut), 4);
        assert_eq!(cut, "\x1b[1;31mabc…\x1b[0m");
        assert_eq!(elide("µs and more", 3), "µs…");
    }

    #[test]
    fn a_narrow_table_drops_the_least_useful_columns_first() {
        let table = Table {
            columns: &MEMBER_COLUMNS,
            rows: vec![vec![
                ("0".into(), Style::Plain),
                ("12345".into(), Style::Plain),
                ("alive".into(), Style::Plain),
                ("1".into(), Style::Plain),
                ("7".into(), Style::Plain),
                ("3 ms ago".into(), Style::Plain),
                ("3 s".into(), Style::Plain),
                ("<1 s ago".into(), Style::Plain),
                ("513".into(), Style::Plain),
                ("writer".into(), Style::Plain),
            ]],
        };
        let paint = Paint { on: false };
        let wide = table.render(&paint, Some(200));
        assert!(wide[0].contains("TOKEN"), "{wide:?}");
        let piped = table.render(&paint, None);
        assert!(!piped[0].contains("TOKEN") && piped[0].contains("LEASE"));
        let narrow = table.render(&paint, Some(58));
        assert_eq!(
            narrow[0].split("  ").filter(|c| !c.is_empty()).count(),
            6,
            "{narrow:?}"
        );
        assert!(narrow.iter().all(|l| visible_width(l) <= 58), "{narrow:?}");
        assert!(narrow[0].contains("OLDEST PIN") && narrow[0].ends_with("NOTE"));
    }
}
