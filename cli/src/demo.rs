//! `shmlock demo`: the main job, shown with real processes.
//!
//! Part one, who writes: a writer process claims and heartbeats, three reader processes
//! attach, a claimant waits; the writer is SIGKILLed and the claimant takes over with
//! generation + 1; a reader is SIGKILLed and vanishes from the count, then is reaped.
//!
//! Part two, what readers still read: the demo process itself becomes the writer (through
//! the library, as an engine would) and publishes versions; a reader process pins version
//! 1, so the writer's `wait_readers_past(2)` times out and the oldest pin stays at 1; the
//! reader is SIGKILLed while the writer waits, and the wait returns with nobody calling
//! reap.
//!
//! Every step waits for the agents' answers (or a condition on the page), never a guess.
//! All output goes through `Story::line`, so a closed pipe (`| head`) ends the demo
//! quietly, with its child processes killed and its temporary directory removed.

use std::io::{StdoutLock, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(unix)]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(unix)]
use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use parking_lot::Mutex;

use shmlock::{OpenState, ShmLock};

use crate::agent::boottime_ns;
use crate::driver::Agent;
use crate::errors::operator_message;
use crate::render::{self, Paint, ViewOptions};
use crate::{Failure, Target};

/// The child processes the demo starts: a writer, three readers and a claimant in part
/// one, two readers in part two. With the demo process itself, that is `PROCESSES`.
const CHILDREN: usize = 7;
const PROCESSES: usize = CHILDREN + 1;

/// The demo's child processes, for the signal thread to kill: every spawn registers here.
/// `None` once the signal thread has taken the list (the demo is ending).
static CHILD_PIDS: Mutex<Option<Vec<u32>>> = Mutex::new(Some(Vec::new()));

/// Register a child, or kill it at once if the demo is already ending on a signal.
fn register_child(pid: u32) {
    let mut pids = CHILD_PIDS.lock();
    match pids.as_mut() {
        Some(pids) => pids.push(pid),
        #[cfg(unix)]
        None => {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // No signal thread on Windows: the list is never taken.
        #[cfg(not(unix))]
        None => {}
    }
}

/// Set by the signal thread as soon as a stop signal arrives.
#[cfg(unix)]
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Ctrl-C, SIGTERM or SIGHUP during the demo: kill its child processes, remove its
/// temporary directory (`remove`, unless `--dir` keeps the files), then die of the same
/// signal. The signals are blocked in every thread of the demo (before any other thread
/// exists: the mask is inherited) and taken by one thread in `sigwait`, so the cleanup
/// runs in a normal thread, not in a signal handler. The agents unblock them at start.
///
/// Meanwhile the story's thread may find an agent gone (Ctrl-C at a terminal signals the
/// agents too, and the cleanup kills them) and panic: a panic hook parks that thread
/// instead, without a message, when a stop signal arrived, so the cleanup ends the
/// process rather than a panic (or its unwinding) racing it.
#[cfg(unix)]
fn handle_signals(remove: Option<PathBuf>) -> Result<(), Failure> {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        park_if_stopping();
        default_hook(info)
    }));
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| format!("cannot block the stop signals: {e}"))?;
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let Ok(received) = set.wait() else { return };
            STOPPING.store(true, Ordering::SeqCst);
            for pid in CHILD_PIDS.lock().take().unwrap_or_default() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            if let Some(dir) = &remove {
                let _ = std::fs::remove_dir_all(dir);
            }
            // Die of the signal, as the shell expects (status 128 + n).
            // SAFETY: restoring the default disposition installs no handler.
            let _ = unsafe { signal::signal(received, SigHandler::SigDfl) };
            let mut only = SigSet::empty();
            only.add(received);
            let _ = only.thread_unblock();
            let _ = signal::raise(received);
            std::process::exit(128 + received as i32);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// On Windows, Ctrl-C reaches every process of the console, the demo's agents included, and
/// ends them; the temporary directory may be left behind.
#[cfg(not(unix))]
fn handle_signals(_remove: Option<PathBuf>) -> Result<(), Failure> {
    Ok(())
}

#[cfg(unix)]
/// When a stop signal arrived, park the calling thread for good: the signal thread is
/// cleaning up and ends the process. The signal thread sets STOPPING right after its
/// sigwait, before it kills or removes anything; a story thread that failed because an
/// agent died of the terminal's Ctrl-C (sent to the whole group) may get there first, so
/// it gives the signal thread a moment. Returns when no stop signal arrived.
fn park_if_stopping() {
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        if STOPPING.load(Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// No stop signals on Windows (see `handle_signals`): nothing to wait for.
#[cfg(not(unix))]
fn park_if_stopping() {}

/// The narrator: numbered steps stamped with the time since the demo started.
struct Story {
    started: Instant,
    step: u32,
    paint: Paint,
    target: Target,
    /// Whether the files outlive the demo (`--dir`): only then may it suggest commands to
    /// run on them.
    kept: bool,
    out: StdoutLock<'static>,
}

impl Story {
    fn line(&mut self, text: &str) -> Result<(), Failure> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    fn step(&mut self, text: &str) -> Result<(), Failure> {
        self.step += 1;
        let at = format!("{:>8}", render::age(self.started.elapsed()));
        let text = format!(
            "\n{} {}",
            self.paint.dim(&format!("[{at}]")),
            self.paint.bold(&format!("{}. {text}", self.step))
        );
        self.line(&text)
    }

    fn say(&mut self, text: &str) -> Result<(), Failure> {
        self.line(&format!("           {text}"))
    }

    fn show(&mut self, title: &str) -> Result<shmlock::Snapshot, Failure> {
        let mut snap = shmlock::inspect(&self.target.lock)?
            .ok_or_else(|| "the lock file vanished".to_string())?;
        // Under `cargo run` this process began as cargo (which execs the program, keeping
        // its pid and start time): its own row says when the demo started instead.
        let me = std::process::id();
        for m in snap.members.iter_mut().filter(|m| m.pid == me) {
            m.process_age = m.process_age.min(self.started.elapsed());
        }
        let heading = format!(
            "\n      {}",
            self.paint.dim(&format!("-- shmlock inspect: {title} --"))
        );
        self.line(&heading)?;
        let opts = ViewOptions {
            reap_hint: self.kept,
            ..ViewOptions::default()
        };
        // The path was said at the start; the rest of the view follows.
        let view = render::view(&self.target, &snap, &self.paint, &opts).lines();
        for line in view.iter().skip(1) {
            self.line(format!("      {line}").trim_end())?;
        }
        self.out.flush()?;
        Ok(snap)
    }

    fn spawn(&mut self, exe: &Path, role: &str) -> Result<Agent, Failure> {
        let mut agent = Agent::spawn(exe, &self.target.lock)
            .map_err(|e| format!("cannot start a {role} process: {e}"))?;
        register_child(agent.pid);
        let open = agent.ok("open");
        self.say(&format!(
            "{role:<8} pid {:<7} opened the lock file: {} (member {})",
            agent.pid,
            open_words(&open[0]),
            open[1]
        ))?;
        Ok(agent)
    }
}

/// How an open found the file, in words (the agent answers the `OpenState` name).
fn open_words(state: &str) -> &'static str {
    match state {
        "Created" => "created it",
        "Reopened" => "reopened it",
        "Joined" => "joined the others",
        "RecoveredFromCrash" => "recovered it after a crash",
        "HealedCorruptHeader" => "healed a damaged page",
        "RecoveredAfterReboot" => "recovered it after a reboot",
        "UpgradedFormat" => "upgraded it from the previous format",
        _ => "opened it",
    }
}

fn open_state_words(state: OpenState) -> &'static str {
    open_words(&format!("{state:?}"))
}

/// An I/O error in words, without its "(os error N)".
fn words(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// What an agent answered after `err <kind> `: the library's own sentence.
fn sentence(answer: &str) -> &str {
    answer.splitn(3, ' ').nth(2).unwrap_or(answer)
}

/// Wait (bounded) until `ready` holds for the page.
fn wait_for_page(
    shm: &Path,
    what: &str,
    ready: impl Fn(&shmlock::Snapshot) -> bool,
) -> Result<(), Failure> {
    let since = Instant::now();
    while !shmlock::inspect(shm)
        .ok()
        .flatten()
        .is_some_and(|s| ready(&s))
    {
        if since.elapsed() > Duration::from_secs(10) {
            return Err(format!("{what} never happened").into());
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Run the demonstration in `dir` (or a fresh temporary directory, removed afterwards).
///
/// A story that fails while a stop signal is being handled (its lock file or an agent
/// vanished under the cleanup) does not report that failure: the process dies of the
/// signal instead, as the shell expects.
pub fn run(dir: Option<PathBuf>) -> Result<(), Failure> {
    let result = run_story(dir);
    if result.is_err() {
        park_if_stopping();
    }
    result
}

fn run_story(dir: Option<PathBuf>) -> Result<(), Failure> {
    let temp;
    let kept = dir.is_some();
    let dir = match dir {
        Some(d) => {
            if std::fs::metadata(&d).is_ok_and(|m| !m.is_dir()) {
                return Err(format!(
                    "{}: exists and is not a directory; give --dir a directory (it is created if missing)",
                    d.display()
                )
                .into());
            }
            std::fs::create_dir_all(&d).map_err(|e| {
                format!(
                    "{}: cannot create the directory: {}",
                    d.display(),
                    words(&e)
                )
            })?;
            d
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("shmlock-demo-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    // Before any thread or child exists, so that every one inherits the blocked signals.
    handle_signals((!kept).then(|| dir.clone()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let data = dir.join("app.db");
    std::fs::write(&data, b"pretend database\n")
        .map_err(|e| format!("{}: cannot write it: {e}", data.display()))?;
    let shm = shmlock::shm_path_for(&data);
    match std::fs::remove_file(&shm) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!("{}: cannot remove the old lock file: {e}", shm.display()).into())
        }
    }
    let mut story = Story {
        started: Instant::now(),
        step: 0,
        paint: Paint::stdout(),
        target: Target {
            given: data.clone(),
            lock: shm.clone(),
            data: Some(data.clone()),
        },
        kept,
        out: std::io::stdout().lock(),
    };
    let title = story.paint.bold(&format!(
        "shmlock demo: {PROCESSES} processes share {}",
        shm.display()
    ));
    story.line(&title)?;
    story.line(&format!(
        "({CHILDREN} child processes started by the demo, and from step 8 the demo process itself;\n \
         times are since the demo began)"
    ))?;

    who_writes(&mut story, &exe)?;
    what_readers_read(&mut story, &exe)?;

    if kept {
        story.line(&format!(
            "\nThe files are kept in {}: try `{} inspect {}`.",
            dir.display(),
            render::invoked_as(),
            data.display()
        ))?;
    }
    story.out.flush()?;
    Ok(())
}

/// Part one: a crash of the writer, a takeover, a crash of a reader, a reap.
fn who_writes(story: &mut Story, exe: &Path) -> Result<(), Failure> {
    let shm = story.target.lock.clone();
    story.step("A writer opens the lock file, claims the writer role, heartbeats every 10 ms")?;
    let mut writer = story.spawn(exe, "writer")?;
    let generation: u64 = writer.ok("try_claim")[0]
        .parse()
        .map_err(|_| "the writer gave a bad answer".to_string())?;
    writer.ok("heartbeat_loop 10");
    story.say(&format!(
        "writer   pid {:<7} owns generation {generation} (its fencing token)",
        writer.pid
    ))?;

    story.step("Three reader processes open the same file and attach a reader each")?;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut r = story.spawn(exe, "reader")?;
        r.ok("attach");
        readers.push(r);
    }
    story.show("one writer, three readers")?;

    story.step("A claimant wants the writer role: try_claim fails, so it waits (up to 10 s)")?;
    let mut claimant = story.spawn(exe, "claimant")?;
    let busy = claimant.ask("try_claim");
    // The library's sentence, up to its advice.
    let busy = sentence(&busy);
    story.say(&format!(
        "try_claim_writer(): {}",
        busy.split(';').next().unwrap_or(busy)
    ))?;
    claimant.send("claim 10000");
    wait_for_page(&shm, "the claimant's wait", |s| s.waiting_claimants > 0)?;
    story.say("claim_writer(10 s): asleep in the kernel, waiting for the writer to go")?;

    story.step(&format!(
        "CRASH: SIGKILL the writer (pid {}) in the middle of its work",
        writer.pid
    ))?;
    let killed_at = boottime_ns();
    writer.kill();
    let answer = claimant.answer();
    let words: Vec<&str> = answer.split_whitespace().collect();
    if words.first() != Some(&"ok") || words.len() < 3 {
        return Err(format!("the claimant failed: {}", sentence(&answer)).into());
    }
    let new_generation: u64 = words[1]
        .parse()
        .map_err(|_| "the claimant gave a bad answer".to_string())?;
    let claimed_at: u64 = words[2]
        .parse()
        .map_err(|_| "the claimant gave a bad answer".to_string())?;
    let took = story.paint.yellow(&format!(
        "claimant pid {} took over {} after the SIGKILL",
        claimant.pid,
        render::age(Duration::from_nanos(claimed_at.saturating_sub(killed_at)))
    ));
    story.say(&took)?;
    story.say("(the kernel dropped the dead writer's lock byte, which woke the claimant)")?;
    story.say(&format!("generation {generation} -> {new_generation}"))?;
    story.say(&format!(
        "writes stamped {generation} are fenced: the old writer can change nothing"
    ))?;
    claimant.ok("heartbeat");
    story.show("after the takeover")?;

    let victim = readers.remove(1);
    story.step(&format!(
        "CRASH: SIGKILL a reader (pid {}) while it is attached",
        victim.pid
    ))?;
    victim.kill();
    let snap = story.show("the dead reader no longer counts")?;
    story.line("")?;
    story.say(&format!(
        "reader count {}: only live members count; the dead entry waits to be reaped",
        snap.reader_count
    ))?;

    story.step("The new writer reaps the dead member (as `shmlock reap` would)")?;
    let reaped = claimant.ok("reap");
    let number = |word: &str| word.parse::<u64>().unwrap_or_default();
    story.say(&format!(
        "reap(): cleared {}, and {} with it",
        render::count(number(&reaped[0]), "dead member"),
        render::count(number(&reaped[1]), "reader")
    ))?;
    story.show("after reap")?;

    story.step("Everyone leaves cleanly: the writer releases, the readers detach and close")?;
    claimant.ok("release");
    claimant.ok("close");
    for mut r in readers {
        r.ok("detach");
        r.ok("close");
    }
    let last = story.show("after everyone left")?;
    story.say(&format!(
        "generation {} stays in the file: the next claim gets {}",
        last.generation,
        last.generation + 1
    ))?;
    Ok(())
}

/// Part two: a pinned reader holds back reclamation; its death releases it.
fn what_readers_read(story: &mut Story, exe: &Path) -> Result<(), Failure> {
    let shm = story.target.lock.clone();
    story.step("Snapshots: this demo process becomes the writer and publishes version 1")?;
    let lock = ShmLock::open(&shm)?;
    story.say(&format!(
        "demo     pid {:<7} opened the lock file: {} (member {})",
        std::process::id(),
        open_state_words(lock.open_state()),
        lock.member_index()
    ))?;
    let writer = lock.try_claim_writer()?;
    writer.publish(1)?;
    story.say(&format!(
        "writer   generation {}; publish(1): readers that attach now pin version 1",
        writer.generation()
    ))?;

    story.step("A reader pins version 1; the writer publishes 2 and 3 and wants to reclaim 1")?;
    let mut pinner = story.spawn(exe, "reader")?;
    pinner.ok("attach");
    story.say(&format!(
        "reader   pid {:<7} attached while version 1 was the latest: it pins 1",
        pinner.pid
    ))?;
    writer.publish(2)?;
    writer.publish(3)?;
    let mut later = story.spawn(exe, "reader")?;
    later.ok("attach");
    story.say(&format!(
        "reader   pid {:<7} attached after publish(3): it pins 3",
        later.pid
    ))?;
    let short = Duration::from_millis(100);
    match writer.wait_readers_past(2, short) {
        Err(e @ shmlock::Error::Timeout { .. }) => {
            let held = story.paint.yellow(&format!(
                "wait_readers_past(2, {}): {}",
                render::age(short),
                operator_message(&e)
            ));
            story.say(&held)?;
            story.say("so the pages only version 1 reads cannot be reused yet")?;
        }
        Err(e) => return Err(e.into()),
        Ok(()) => {
            return Err("version 1 was reported free while a reader pins it"
                .to_string()
                .into())
        }
    }
    story.show("a pinned reader holds back reclamation")?;

    story.step(&format!(
        "CRASH: SIGKILL the reader pinning version 1 (pid {}) while the writer waits",
        pinner.pid
    ))?;
    let (result, returned_at, killed_at) = std::thread::scope(|scope| -> Result<_, Failure> {
        let waiter = scope.spawn(|| {
            let result = writer.wait_readers_past(2, Duration::from_secs(10));
            (result, boottime_ns())
        });
        // Kill only once the writer is asleep, so its wait has really been held back.
        let asleep = wait_for_page(&shm, "the writer's wait", |s| s.waiting_for_readers > 0);
        let killed_at = boottime_ns();
        pinner.kill();
        let (result, returned_at) = waiter.join().expect("the waiting thread does not panic");
        asleep?;
        Ok((result, returned_at, killed_at))
    })?;
    result?;
    let freed = story.paint.yellow(&format!(
        "wait_readers_past(2, 10 s) returned {} after the SIGKILL, and nobody called reap",
        render::age(Duration::from_nanos(returned_at.saturating_sub(killed_at)))
    ));
    story.say(&freed)?;
    story.say("(a dead process's pins never count: its kernel lock went with it)")?;
    story.say(&format!(
        "oldest_pinned(): {}",
        lock.oldest_pinned()
            .map_or("no pins".to_string(), |v| format!("version {v}"))
    ))?;
    story.show("the dead reader's pin no longer counts")?;

    story.step("The writer releases, the last reader detaches and closes")?;
    writer.release()?;
    later.ok("detach");
    later.ok("close");
    let published = lock.published();
    drop(lock);
    let last = story.show("at the end")?;
    story.say(&format!(
        "generation {} and published version {published} stay in the file, across crashes and reopens",
        last.generation
    ))?;
    Ok(())
}
