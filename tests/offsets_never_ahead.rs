//! P3 while traffic flows: the offsets committed to Kafka never run ahead of what both
//! sinks have durably stored. Sampled every 50 ms during a drain: each sample reads the
//! committed offsets first and both sinks' durable progress after, so progress can only
//! have grown in between, and a commit ahead of it is a real violation.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

#[test]
fn committed_offsets_never_pass_either_sinks_durable_progress() {
    let mut env = TestEnv::new(3);
    let p = env.start_processor(&[("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "500")]);
    // Traffic paced over about 3 s (pacing, not synchronisation), so that the samples
    // see the offsets move.
    let records = valid_records(24_000);
    let (brokers, topic) = (env.brokers.clone(), env.topic.clone());
    let sender = std::thread::spawn(move || {
        for chunk in records.chunks(3_000) {
            produce_to(&brokers, &topic, chunk);
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    wait_until("the first records are committed", Duration::from_secs(60), || {
        env.committed(3).iter().any(|c| *c > 0)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut samples, mut moving) = (0, 0);
    loop {
        let committed = env.committed(3);
        for partition in 0..3 {
            let c = committed[partition as usize];
            if c < 0 {
                continue;
            }
            let (pg, lake) = env.sink_progress(partition);
            assert!(
                pg.is_some_and(|pg| c <= pg) && lake.is_some_and(|lake| c <= lake),
                "partition {partition}: committed {c}, postgres {pg:?}, lake {lake:?}"
            );
            moving += usize::from(!sender.is_finished());
        }
        samples += 1;
        if sender.is_finished() && committed == env.high_watermarks(3) {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: committed {committed:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    sender.join().expect("every record was delivered");
    assert!(moving >= 10, "the check saw the offsets move ({moving} mid-stream samples)");
    assert_eq!(env.stop_processor(p), 0);
    eprintln!("{samples} samples, {moving} taken mid-stream");
}
