
use loom_tests::shmlock::page::owner_word;
use loom_tests::shmlock::platform::Mutant;
use loom_tests::shmlock::protocol::writer::{self, ClaimError};
use loom_tests::*;

fn claim_race(mutant: Option<Mutant>) {
    check(3, move || {
        let world = World::initialised(mutant);
        let procs: Vec<_> = (1..=3).map(|pid| Process::new(&world, pid)).collect();
        let regs: Vec<_> = procs.iter().map(|p| p.register()).collect();
        let handles: Vec<_> = procs
            .into_iter()
            .zip(regs.clone())
            .map(|(p, reg)| {
                spawn(move || {
                    p.run(None, |p| writer::try_claim(p.page(), p, reg.index, None))
                        .result
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one claimant wins: {results:?}");
        let winner = winners[0];
        assert_eq!(winner.generation, SEED + 1);
        let widx = regs.iter().position(|r| owner_word(SEED + 1, Some(r.index)) == winner.word).unwrap();
        for r in &results {
            if let Err(e) = r {
                assert_eq!(*e, ClaimError::Busy { index: regs[widx].index, pid: widx as u32 + 1, generation: SEED + 1 });
            }
        }
        assert_owner_history_sound(&world.owner_writes());
    });
}

#[test]
fn claim_race_has_one_winner() {
    claim_race(None);
}

#[test]
#[should_panic(expected = "exactly one claimant wins")]
fn claim_race_without_cas_has_two_winners() {
    claim_race(Some(Mutant::ClaimWithoutCas));
}
