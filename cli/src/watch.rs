//! `shmlock watch PATH`: the inspect view, sampled every interval.
//!
//! On a terminal it redraws in place on the alternate screen (like `top`), fitted to the
//! terminal's size (it asks again every frame, so resizing works): columns the width has
//! no room for are dropped and long lines cut with `…`; when the height is short, spacing,
//! the less useful lines, old events and then member rows ("… N more") go, so nothing ever
//! wraps or scrolls. It highlights what changed (writer, published version, oldest pin,
//! counts, member rows) and keeps a log of events, oldest first, newest at the bottom.
//! `q` (read from the terminal without Enter), Ctrl-C, SIGTERM or SIGHUP restore the
//! terminal and exit 0. Elsewhere (a pipe, a file) it appends one snapshot per interval,
//! events first, with no escape codes.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use shmlock::Snapshot;

use crate::render::{self, count, rank, Highlights, Paint, Ranked, View, ViewOptions};
use crate::term::{self, Keys};
use crate::{Failure, Target};

/// Set by the signal handler; the loop checks it between naps.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: std::ffi::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() -> Result<(), Failure> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to a static atomic, which is async-signal-safe,
        // and it replaces no handler anything else in this process relies on.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| format!("cannot install a handler for {signal}: {e}"))?;
    }
    Ok(())
}

/// One thing that changed between two samples.
#[derive(Clone, Debug)]
pub struct Event {
    pub text: String,
    /// A takeover or a death: drawn in red.
    pub alarming: bool,
}

/// What a sample found.
enum Sample {
    Missing,
    Page(Box<Snapshot>),
    Failed(String),
}

/// The events between `before` and `now`, in the order they most likely happened, and
/// what to highlight. Two samples do not say what happened first between them, so the
/// order is causal: deaths (and the clearing of the dead), then arrivals, then changes
/// of the writer role (a takeover needs the death before it; a claim needs its claimant
/// to have joined), then departures of the living (a writer releases before it leaves).
pub fn diff(before: &Snapshot, now: &Snapshot) -> (Vec<Event>, Highlights) {
    let mut deaths = Vec::new();
    let mut arrivals = Vec::new();
    let mut writer = Vec::new();
    let mut departures = Vec::new();
    let mut hl = Highlights::default();
    let event = |text: String, alarming: bool| Event { text, alarming };

    let owner_id = |s: &Snapshot| s.owner.as_ref().map(|o| (o.generation, o.index));
    match (&before.owner, &now.owner) {
        (_, Some(n)) if owner_id(before) != owner_id(now) => {
            hl.writer = true;
            let who = format!("pid {}", n.pid);
            if now.takeovers > before.takeovers {
                let from = before
                    .owner
                    .as_ref()
                    .map(|b| format!(" from pid {}", b.pid))
                    .unwrap_or_default();
                writer.push(event(
                    format!("TAKEOVER: generation {} by {who}{from}", n.generation),
                    true,
                ));
            } else {
                writer.push(event(
                    format!("generation {} claimed by {who}", n.generation),
                    false,
                ));
            }
        }
        (Some(b), None) => {
            hl.writer = true;
            if b.alive {
                writer.push(event(
                    format!("generation {} released by pid {}", b.generation, b.pid),
                    false,
                ));
            } else {
                writer.push(event(
                    format!(
                        "generation {} of the dead writer pid {} was cleared",
                        b.generation, b.pid
                    ),
                    false,
                ));
            }
        }
        (Some(b), Some(n)) if b.alive && !n.alive => {
            hl.writer = true;
            writer.push(event(
                format!(
                    "writer DIED: generation {} (pid {}); the next claim takes over",
                    n.generation, n.pid
                ),
                true,
            ));
        }
        _ => {}
    }

    let key = |m: &shmlock::MemberInfo| (m.index, m.token);
    let old: HashMap<_, _> = before.members.iter().map(|m| (key(m), m)).collect();
    let new: HashMap<_, _> = now.members.iter().map(|m| (key(m), m)).collect();
    for m in &now.members {
        match old.get(&key(m)) {
            None => {
                hl.members.insert(key(m));
                arrivals.push(event(
                    format!("pid {} joined (member {})", m.pid, m.index),
                    false,
                ));
            }
            Some(b) if b.alive && !m.alive => {
                hl.members.insert(key(m));
                deaths.push(event(
                    format!(
                        "pid {} (member {}) DIED with {} attached",
                        m.pid,
                        m.index,
                        count(m.readers, "reader")
                    ),
                    true,
                ));
            }
            Some(b) if b.readers != m.readers || b.oldest_pin != m.oldest_pin => {
                hl.members.insert(key(m));
            }
            Some(_) => {}
        }
    }
    // A takeover of a dead owner reaps its member: that one died, whatever the last sample
    // saw. Otherwise a member that vanished alive may have closed or died in between.
    let taken_over = (now.takeovers > before.takeovers)
        .then(|| before.owner.as_ref().and_then(|o| o.index))
        .flatten();
    for m in &before.members {
        if !new.contains_key(&key(m)) {
            if taken_over == Some(m.index) {
                deaths.push(event(
                    format!(
                        "writer pid {} (member {}) died and was cleared",
                        m.pid, m.index
                    ),
                    true,
                ));
            } else if m.alive {
                departures.push(event(
                    format!("pid {} is gone (member {})", m.pid, m.index),
                    false,
                ));
            } else {
                deaths.push(event(
                    format!("dead pid {} (member {}) was reaped", m.pid, m.index),
                    false,
                ));
            }
        }
    }
    hl.published = before.published != now.published;
    hl.oldest = before.oldest_pinned != now.oldest_pinned;
    hl.readers = before.reader_count != now.reader_count;
    hl.waiting = (
        before.waiting_claimants,
        before.waiting_for_publish,
        before.waiting_for_readers,
    ) != (
        now.waiting_claimants,
        now.waiting_for_publish,
        now.waiting_for_readers,
    );
    let mut events = deaths;
    events.append(&mut arrivals);
    events.append(&mut writer);
    events.append(&mut departures);
    (events, hl)
}

fn sample(target: &Target) -> Sample {
    match crate::sample(target) {
        Ok(Some(s)) => Sample::Page(Box::new(s)),
        Ok(None) => Sample::Missing,
        Err(Failure::Message(m)) => Sample::Failed(m),
        Err(Failure::Output(e)) => Sample::Failed(e.to_string()),
    }
}

/// Leaves the alternate screen and shows the cursor again, however the loop ends.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        let mut out = std::io::stdout();
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(Screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
    }
}

/// Sleep until `deadline`, a stop signal or a quit key, whichever comes first; `true`
/// when it is time to quit.
fn nap_until(deadline: Instant, keys: Option<&Keys>) -> bool {
    loop {
        if STOP.load(Ordering::SeqCst) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Bounded slices: a signal between the check above and the sleep is seen soon.
        let slice = (deadline - now).min(Duration::from_millis(25));
        match keys {
            Some(keys) => {
                if keys.wait_for_quit(slice) {
                    return true;
                }
            }
            None => std::thread::sleep(slice),
        }
    }
}

/// The frame for a terminal of `height` rows: the view (or `body` lines when there is no
/// page) and the events, cut to fit. See the module docs for what goes first.
fn compose(
    title: String,
    view: View,
    events: &[String],
    paint: &Paint,
    height: Option<usize>,
) -> Vec<String> {
    let mut head: Vec<Ranked> = vec![(rank::KEEP, title), (rank::SPACER, String::new())];
    head.extend(view.head);
    let mut table = view.table;
    let mut foot = view.foot;
    let mut events_head: Vec<Ranked> = Vec::new();
    if !events.is_empty() {
        events_head.push((rank::SPACER, String::new()));
        events_head.push((rank::FORMAT, paint.bold("recent events")));
    }
    let mut events: Vec<String> = events.to_vec();
    let Some(height) = height else {
        return assemble(head, table, foot, events_head, events);
    };
    let total = |h: &[Ranked], t: &[String], f: &[Ranked], eh: &[Ranked], e: &[String]| {
        h.len() + t.len() + f.len() + eh.len() + e.len()
    };
    let drop_rank = |r: u8, h: &mut Vec<Ranked>, f: &mut Vec<Ranked>, eh: &mut Vec<Ranked>| {
        h.retain(|(k, _)| *k != r);
        f.retain(|(k, _)| *k != r);
        eh.retain(|(k, _)| *k != r);
    };
    for r in [rank::SPACER, rank::TAKEOVERS, rank::FORMAT, rank::LOCK_FILE] {
        if total(&head, &table, &foot, &events_head, &events) <= height {
            break;
        }
        drop_rank(r, &mut head, &mut foot, &mut events_head);
    }
    let newest = |events: &mut Vec<String>, keep: usize| {
        let cut = events.len().saturating_sub(keep);
        events.drain(..cut);
    };
    if total(&head, &table, &foot, &events_head, &events) > height {
        newest(&mut events, 2);
    }
    for r in [rank::COUNTS, rank::READERS] {
        if total(&head, &table, &foot, &events_head, &events) <= height {
            break;
        }
        drop_rank(r, &mut head, &mut foot, &mut events_head);
    }
    let over = total(&head, &table, &foot, &events_head, &events).saturating_sub(height);
    if over > 0 && table.len() > 2 {
        // Keep the header and as many rows as fit, with a line saying how many are hidden.
        let rows = table.len() - 1;
        let shown = rows.saturating_sub(over + 1).max(1);
        table.truncate(1 + shown);
        table.push(format!(
            "… {} more (a taller terminal shows them)",
            count((rows - shown) as u64, "member")
        ));
    }
    if total(&head, &table, &foot, &events_head, &events) > height {
        newest(&mut events, 1);
    }
    let mut frame = assemble(head, table, foot, events_head, events);
    frame.truncate(height);
    frame
}

fn assemble(
    head: Vec<Ranked>,
    table: Vec<String>,
    foot: Vec<Ranked>,
    events_head: Vec<Ranked>,
    events: Vec<String>,
) -> Vec<String> {
    let mut lines: Vec<String> = head.into_iter().map(|(_, l)| l).collect();
    lines.extend(table);
    lines.extend(foot.into_iter().map(|(_, l)| l));
    lines.extend(events_head.into_iter().map(|(_, l)| l));
    lines.extend(events);
    lines
}

fn elapsed(since: Instant) -> String {
    format!("+{:.1} s", since.elapsed().as_secs_f64())
}

pub fn run(target: &Target, interval: Duration, limit: Option<u64>) -> Result<(), Failure> {
    // A file that cannot be read at all is an error now, not a screen of errors; a missing
    // lock file is worth watching for (the application may not have started yet).
    let first = sample(target);
    if let Sample::Failed(message) = first {
        return Err(Failure::Message(message));
    }
    install_stop_handlers()?;
    let terminal = std::io::stdout().is_terminal();
    let paint = Paint::new(terminal);
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut log: VecDeque<(String, Event)> = VecDeque::new();
    let mut recent: Vec<(Instant, Highlights)> = Vec::new();
    let mut previous: Option<Sample> = None;
    let mut current = first;
    let mut taken: u64 = 0;
    let screen = if terminal {
        Some(Screen::enter()?)
    } else {
        None
    };
    // Keys only where the frame says "q quits"; dropped (restored) before the screen.
    let keys = if terminal { Keys::new() } else { None };
    loop {
        taken += 1;
        let tick = Instant::now();
        let when = elapsed(started);
        let mut events = Vec::new();
        match (previous.as_ref(), &current) {
            (Some(Sample::Page(before)), Sample::Page(now)) => {
                let (e, hl) = diff(before, now);
                events = e;
                recent.push((tick, hl));
            }
            (Some(Sample::Missing), Sample::Page(_)) => events.push(Event {
                text: "the lock file appeared".into(),
                alarming: false,
            }),
            (Some(Sample::Page(_)), Sample::Missing) => events.push(Event {
                text: "the lock file is gone".into(),
                alarming: true,
            }),
            _ => {}
        }
        // Highlights last a couple of seconds (at least one frame) so the eye catches them.
        let keep = interval.max(Duration::from_secs(2));
        recent.retain(|(at, _)| tick.duration_since(*at) <= keep);
        let mut highlights = Highlights::default();
        for (_, h) in &recent {
            highlights.absorb(h);
        }
        let size = if terminal {
            term::size(std::io::stdout().as_fd())
        } else {
            None
        };
        let opts = ViewOptions {
            width: size.map(|(w, _)| w),
            reap_hint: true,
            highlights,
        };
        let view: View = match &current {
            Sample::Page(s) => render::view(target, s, &paint, &opts),
            Sample::Missing => View {
                head: vec![(
                    rank::KEEP,
                    match &target.data {
                        Some(data) => format!(
                            "{}: no lock file yet (waiting for {} to appear)",
                            data.display(),
                            target.lock.display()
                        ),
                        None => format!(
                            "{}: no lock file yet (waiting for it to appear)",
                            target.lock.display()
                        ),
                    },
                )],
                table: Vec::new(),
                foot: Vec::new(),
            },
            Sample::Failed(message) => View {
                head: vec![(rank::KEEP, paint.red(message))],
                table: Vec::new(),
                foot: Vec::new(),
            },
        };
        let paint_event = |e: &Event| {
            if e.alarming {
                paint.red(&e.text)
            } else {
                paint.yellow(&e.text)
            }
        };
        if terminal {
            for e in events {
                log.push_back((when.clone(), e));
            }
            while log.len() > 100 {
                log.pop_front();
            }
            let title = paint.bold(&format!(
                "shmlock watch  {when}  every {}  (q quits)  {}",
                render::age(interval),
                target.given.display(),
            ));
            let lines: Vec<String> = log
                .iter()
                .map(|(at, e)| format!("  {at:>9}  {}", paint_event(e)))
                .collect();
            let frame = compose(title, view, &lines, &paint, size.map(|(_, h)| h));
            // Each line is erased, then written (cut to the width, so nothing wraps); the
            // last one gets no newline (so nothing scrolls); what is below is erased.
            let width = size.map_or(usize::MAX, |(w, _)| w);
            let mut text = String::from("\x1b[H");
            for (i, line) in frame.iter().enumerate() {
                if i > 0 {
                    text.push_str("\r\n");
                }
                text.push_str("\x1b[2K");
                text.push_str(&render::elide(line, width));
            }
            if size.is_none_or(|(_, h)| frame.len() < h) {
                text.push_str("\r\n\x1b[J");
            }
            out.write_all(text.as_bytes())?;
        } else {
            let mut text = format!("== {} at {when} (sample {taken})\n", target.given.display());
            for e in &events {
                text.push_str(&format!("* {}\n", e.text));
            }
            for line in view.lines() {
                text.push_str(&line);
                text.push('\n');
            }
            text.push('\n');
            out.write_all(text.as_bytes())?;
        }
        out.flush()?;
        if limit.is_some_and(|n| taken >= n) || STOP.load(Ordering::SeqCst) {
            break;
        }
        if nap_until(tick + interval, keys.as_ref()) {
            break;
        }
        previous = Some(std::mem::replace(&mut current, sample(target)));
    }
    drop(keys);
    drop(screen);
    Ok(())
}
