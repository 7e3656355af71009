//! `shmlock watch PATH`: the inspect view, sampled every interval.
//!
//! On a terminal it redraws in place on the alternate screen (like `top`), highlights what
//! changed and keeps a short log of events (claims, takeovers, deaths, members coming and
//! going); Ctrl-C (or SIGTERM/SIGHUP) restores the terminal and exits 0. Elsewhere (a pipe,
//! a file) it appends one snapshot per interval, events first, with no escape codes.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use shmlock::Snapshot;

use crate::render::{self, count, Highlights, Paint};
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

/// The events between `before` and `now`, and what to highlight.
pub fn diff(before: &Snapshot, now: &Snapshot) -> (Vec<Event>, Highlights) {
    let mut events = Vec::new();
    let mut hl = Highlights::default();
    let mut say = |text: String, alarming: bool| events.push(Event { text, alarming });

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
                say(
                    format!("TAKEOVER by {who}{from}: generation {}", n.generation),
                    true,
                );
            } else {
                say(
                    format!(
                        "{who} claimed the writer role (generation {})",
                        n.generation
                    ),
                    false,
                );
            }
        }
        (Some(b), None) => {
            hl.writer = true;
            if b.alive {
                say(
                    format!(
                        "pid {} released the writer role (generation {})",
                        b.pid, b.generation
                    ),
                    false,
                );
            } else {
                say(
                    format!(
                        "the dead writer pid {} (generation {}) was cleared",
                        b.pid, b.generation
                    ),
                    false,
                );
            }
        }
        (Some(b), Some(n)) if b.alive && !n.alive => {
            hl.writer = true;
            say(
                format!(
                    "writer pid {} DIED (generation {}); the next claim takes over",
                    n.pid, n.generation
                ),
                true,
            );
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
                say(format!("pid {} joined (member {})", m.pid, m.index), false);
            }
            Some(b) if b.alive && !m.alive => {
                hl.members.insert(key(m));
                say(
                    format!(
                        "pid {} (member {}) DIED with {} attached",
                        m.pid,
                        m.index,
                        count(m.readers, "reader")
                    ),
                    true,
                );
            }
            Some(b) if b.readers != m.readers => {
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
                say(
                    format!(
                        "writer pid {} (member {}) died and was cleared",
                        m.pid, m.index
                    ),
                    true,
                );
            } else if m.alive {
                say(format!("pid {} is gone (member {})", m.pid, m.index), false);
            } else {
                say(
                    format!("dead pid {} (member {}) was reaped", m.pid, m.index),
                    false,
                );
            }
        }
    }
    hl.readers = before.reader_count != now.reader_count;
    hl.waiting = before.waiting_claimants != now.waiting_claimants;
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

/// Sleep until `deadline` or a stop signal, whichever comes first.
fn nap_until(deadline: Instant) {
    while !STOP.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(25)));
    }
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
        let mut hl = Highlights::default();
        for (_, h) in &recent {
            hl.writer |= h.writer;
            hl.readers |= h.readers;
            hl.waiting |= h.waiting;
            hl.members.extend(h.members.iter().copied());
        }

        let mut body: Vec<String> = match &current {
            Sample::Page(s) => render::view(target, s, &paint, &hl),
            Sample::Missing => vec![match &target.data {
                Some(data) => format!(
                    "{}: no lock file yet (waiting for {} to appear)",
                    data.display(),
                    target.lock.display()
                ),
                None => format!(
                    "{}: no lock file yet (waiting for it to appear)",
                    target.lock.display()
                ),
            }],
            Sample::Failed(message) => vec![paint.red(message)],
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
            while log.len() > 8 {
                log.pop_front();
            }
            let mut frame = vec![
                paint.bold(&format!(
                    "shmlock watch {}  every {}  {}  (Ctrl-C quits)",
                    target.given.display(),
                    render::age(interval),
                    when
                )),
                String::new(),
            ];
            frame.append(&mut body);
            if !log.is_empty() {
                frame.push(String::new());
                frame.push(paint.bold("recent events"));
                for (at, e) in &log {
                    frame.push(format!("  {at:>9}  {}", paint_event(e)));
                }
            }
            let mut text = String::from("\x1b[H");
            for line in frame {
                text.push_str(&line);
                text.push_str("\x1b[K\n");
            }
            text.push_str("\x1b[J");
            out.write_all(text.as_bytes())?;
        } else {
            let mut text = format!("== {} at {when} (sample {taken})\n", target.given.display());
            for e in &events {
                text.push_str(&format!("* {}\n", e.text));
            }
            for line in body {
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
        nap_until(tick + interval);
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        previous = Some(std::mem::replace(&mut current, sample(target)));
    }
    drop(screen);
    Ok(())
}
