//! `shmlock demo`: the main job, shown with real processes.
//!
//! A writer process claims and heartbeats, three reader processes attach, a claimant waits;
//! the writer is SIGKILLed and the claimant takes over with generation + 1; a reader is
//! SIGKILLed and vanishes from the count; the state is printed at each step.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::boottime_ns;
use crate::driver::Agent;
use crate::render;

fn show(step: &str, shm: &Path) -> Result<shmlock::Snapshot, String> {
    let snap = shmlock::inspect(shm)
        .map_err(|e| e.to_string())?
        .ok_or("the lock file vanished")?;
    println!("\n== {step}");
    print!("{}", render::snapshot(&snap));
    Ok(snap)
}

fn spawn(exe: &Path, shm: &Path, role: &str) -> Result<Agent, String> {
    let mut agent = Agent::spawn(exe, shm).map_err(|e| format!("cannot start a {role}: {e}"))?;
    let open = agent.ok("open");
    println!(
        "   started {role:<9} pid {:<7} open: {:<18} member {}",
        agent.pid, open[0], open[1]
    );
    Ok(agent)
}

/// Run the demonstration in `dir` (or a fresh temporary directory, removed afterwards).
pub fn run(dir: Option<PathBuf>) -> Result<(), String> {
    let temp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
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
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let data = dir.join("app.db");
    std::fs::write(&data, b"pretend database\n").map_err(|e| e.to_string())?;
    let shm = shmlock::shm_path_for(&data);
    let _ = std::fs::remove_file(&shm);
    println!("shmlock demo: {} processes around {}", 5, shm.display());

    println!("\n-- a writer process claims the writer role and heartbeats every 10 ms");
    let mut writer = spawn(&exe, &shm, "writer")?;
    let generation: u64 = writer.ok("try_claim")[0]
        .parse()
        .map_err(|_| "bad answer")?;
    writer.ok("heartbeat_loop 10");
    println!("   writer {} owns generation {generation}", writer.pid);

    println!("\n-- three reader processes attach");
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut r = spawn(&exe, &shm, "reader")?;
        r.ok("attach");
        readers.push(r);
    }
    show("writer + 3 readers", &shm)?;

    println!("\n-- a claimant asks for the writer role and waits (up to 10 s)");
    let mut claimant = spawn(&exe, &shm, "claimant")?;
    let busy = claimant.ask("try_claim");
    println!("   try_claim_writer -> {busy}");
    claimant.send("claim 10000");
    // Wait until the claimant is asleep in claim_writer (a condition, bounded).
    let start = Instant::now();
    while shmlock::inspect(&shm)
        .ok()
        .flatten()
        .is_none_or(|s| s.waiting_claimants == 0)
    {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the claimant never started waiting".into());
        }
        std::thread::yield_now();
    }

    println!("\n-- SIGKILL the writer (pid {})", writer.pid);
    let killed_at = boottime_ns();
    writer.kill();
    let answer = claimant.answer();
    let words: Vec<&str> = answer.split_whitespace().collect();
    if words.first() != Some(&"ok") {
        return Err(format!("the claimant failed: {answer}"));
    }
    let new_generation: u64 = words[1].parse().map_err(|_| "bad answer")?;
    let claimed_at: u64 = words[2].parse().map_err(|_| "bad answer")?;
    println!(
        "   claimant {} took over: generation {generation} -> {new_generation}, {:.0} µs after the SIGKILL",
        claimant.pid,
        claimed_at.saturating_sub(killed_at) as f64 / 1000.0
    );
    claimant.ok("heartbeat");
    show("after the takeover", &shm)?;

    let victim = readers.remove(1);
    println!("\n-- SIGKILL a reader (pid {})", victim.pid);
    victim.kill();
    let snap = show("the dead reader no longer counts", &shm)?;
    println!(
        "   reader count {} (live members only); its entry waits to be reaped",
        snap.reader_count
    );
    let reaped = claimant.ok("reap");
    println!(
        "\n-- the claimant reaps: {} member(s), {} reader(s) cleared",
        reaped[0], reaped[1]
    );
    show("after reap", &shm)?;

    println!("\n-- everyone leaves cleanly");
    claimant.ok("release");
    for mut r in readers {
        r.ok("detach");
        r.send("exit");
    }
    claimant.send("exit");
    drop(claimant);
    match shmlock::inspect(&shm).map_err(|e| e.to_string())? {
        Some(s) => println!(
            "   final: writer {}, {} member(s), generation {} kept for the next claim",
            if s.owner.is_some() { "held" } else { "free" },
            s.live_members().count(),
            s.generation
        ),
        None => println!("   final: no lock file"),
    }
    Ok(())
}
