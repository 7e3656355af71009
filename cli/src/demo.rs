//! `shmlock demo`: the main job, shown with real processes.
//!
//! A writer process claims and heartbeats, three reader processes attach, a claimant waits;
//! the writer is SIGKILLed and the claimant takes over with generation + 1; a reader is
//! SIGKILLed and vanishes from the count, then is reaped; the state is printed at each step.
//! Every step waits for the agents' answers (or a condition on the page), never a guess.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::boottime_ns;
use crate::driver::Agent;
use crate::render::{self, Paint};
use crate::{Failure, Target};

/// The narrator: numbered steps stamped with the time since the demo started.
struct Story {
    started: Instant,
    step: u32,
    paint: Paint,
    target: Target,
}

impl Story {
    fn step(&mut self, text: &str) {
        self.step += 1;
        let at = format!("{:>8}", render::age(self.started.elapsed()));
        println!(
            "\n{} {}",
            self.paint.dim(&format!("[{at}]")),
            self.paint.bold(&format!("{}. {text}", self.step))
        );
    }

    fn say(&self, text: &str) {
        println!("           {text}");
    }

    fn show(&self, title: &str) -> Result<shmlock::Snapshot, String> {
        let snap = shmlock::inspect(&self.target.lock)
            .map_err(|e| e.to_string())?
            .ok_or("the lock file vanished")?;
        println!(
            "\n      {}",
            self.paint.dim(&format!("-- shmlock inspect: {title} --"))
        );
        // The path was said at the start; the rest of the view follows.
        let view = render::view(&self.target, &snap, &self.paint, &Default::default());
        for line in view.iter().skip(1) {
            println!("{}", format!("      {line}").trim_end());
        }
        let _ = std::io::stdout().flush();
        Ok(snap)
    }

    fn spawn(&self, exe: &Path, role: &str) -> Result<Agent, String> {
        let mut agent = Agent::spawn(exe, &self.target.lock)
            .map_err(|e| format!("cannot start a {role} process: {e}"))?;
        let open = agent.ok("open");
        self.say(&format!(
            "{role:<8} pid {:<7} opened the lock file: {} (member {})",
            agent.pid, open[0], open[1]
        ));
        Ok(agent)
    }
}

/// What an agent answered after `err <kind> `: the library's own sentence.
fn sentence(answer: &str) -> &str {
    answer.splitn(3, ' ').nth(2).unwrap_or(answer)
}

/// Run the demonstration in `dir` (or a fresh temporary directory, removed afterwards).
pub fn run(dir: Option<PathBuf>) -> Result<(), Failure> {
    let temp;
    let keep = dir.is_some();
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| format!("{}: cannot create it: {e}", d.display()))?;
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
    };
    println!(
        "{}",
        story.paint.bold(&format!(
            "shmlock demo: six processes share {}",
            shm.display()
        ))
    );
    println!(
        "(each process below is a separate `shmlock agent` child; times are since the demo began)"
    );

    story.step("A writer opens the lock file, claims the writer role, heartbeats every 10 ms");
    let mut writer = story.spawn(&exe, "writer")?;
    let generation: u64 = writer.ok("try_claim")[0]
        .parse()
        .map_err(|_| "the writer gave a bad answer".to_string())?;
    writer.ok("heartbeat_loop 10");
    story.say(&format!(
        "writer   pid {:<7} owns generation {generation} (its fencing token)",
        writer.pid
    ));

    story.step("Three reader processes open the same file and attach a reader each");
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut r = story.spawn(&exe, "reader")?;
        r.ok("attach");
        readers.push(r);
    }
    story.show("one writer, three readers")?;

    story.step("A claimant wants the writer role: try_claim fails, so it waits (up to 10 s)");
    let mut claimant = story.spawn(&exe, "claimant")?;
    let busy = claimant.ask("try_claim");
    // The library's sentence, up to its advice.
    let busy = sentence(&busy);
    story.say(&format!(
        "try_claim_writer(): {}",
        busy.split(';').next().unwrap_or(busy)
    ));
    claimant.send("claim 10000");
    // Wait until the claimant is asleep in claim_writer (a condition, bounded).
    let waiting_since = Instant::now();
    while shmlock::inspect(&shm)
        .ok()
        .flatten()
        .is_none_or(|s| s.waiting_claimants == 0)
    {
        if waiting_since.elapsed() > Duration::from_secs(10) {
            return Err("the claimant never started waiting".to_string().into());
        }
        std::thread::yield_now();
    }
    story.say("claim_writer(10 s): asleep in the kernel, waiting for the writer to go");

    story.step(&format!(
        "CRASH: SIGKILL the writer (pid {}) in the middle of its work",
        writer.pid
    ));
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
    story.say(&story.paint.yellow(&format!(
        "claimant pid {} took over {} after the SIGKILL",
        claimant.pid,
        render::age(Duration::from_nanos(claimed_at.saturating_sub(killed_at)))
    )));
    story.say("(the kernel dropped the dead writer's lock byte, which woke the claimant)");
    story.say(&format!("generation {generation} -> {new_generation}"));
    story.say(&format!(
        "writes stamped {generation} are fenced: the old writer can change nothing"
    ));
    claimant.ok("heartbeat");
    story.show("after the takeover")?;

    let victim = readers.remove(1);
    story.step(&format!(
        "CRASH: SIGKILL a reader (pid {}) while it is attached",
        victim.pid
    ));
    victim.kill();
    let snap = story.show("the dead reader no longer counts")?;
    println!();
    story.say(&format!(
        "reader count {}: only live members count; the dead entry waits to be reaped",
        snap.reader_count
    ));

    story.step("The new writer reaps the dead member (as `shmlock reap` would)");
    let reaped = claimant.ok("reap");
    let number = |word: &str| word.parse::<u64>().unwrap_or_default();
    story.say(&format!(
        "reap(): cleared {}, and {} with it",
        render::count(number(&reaped[0]), "dead member"),
        render::count(number(&reaped[1]), "reader")
    ));
    story.show("after reap")?;

    story.step("Everyone leaves cleanly: the writer releases, the readers detach and close");
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
    ));
    if keep {
        println!(
            "\nThe files are kept in {}: try `shmlock inspect {}`.",
            dir.display(),
            data.display()
        );
    }
    Ok(())
}
