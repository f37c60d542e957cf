//! The courier queue's rules, without a stream: order per pair, turns
//! between pairs, BUSY pausing one pair only, and resending after a break.

use std::time::Instant;

use super::*;

fn envelope(seq: u64, from: u8, to: u8) -> pb::Envelope {
    pb::Envelope { seq, from_app: vec![from; 32], to_app: vec![to; 32], payload: vec![0; 10], ..Default::default() }
}

fn drain(queue: &mut Queue) -> Vec<u64> {
    std::iter::from_fn(|| queue.next(usize::MAX, usize::MAX)).map(|e| e.seq).collect()
}

#[test]
fn pairs_take_turns_and_each_keeps_its_order() {
    let mut queue = Queue::default();
    for (seq, pair) in [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)] {
        queue.push(envelope(seq, pair, 9));
    }
    assert_eq!(drain(&mut queue), vec![1, 4, 2, 5, 3]);
    assert_eq!(queue.in_flight(), 5);
}

#[test]
fn the_window_bounds_what_is_on_the_wire() {
    let mut queue = Queue::default();
    for seq in 1..=5 {
        queue.push(envelope(seq, 1, 9));
    }
    assert_eq!(queue.next(2, usize::MAX).map(|e| e.seq), Some(1));
    assert_eq!(queue.next(2, usize::MAX).map(|e| e.seq), Some(2));
    assert!(queue.next(2, usize::MAX).is_none(), "window full");
    queue.held(1);
    assert_eq!(queue.next(2, usize::MAX).map(|e| e.seq), Some(3), "held makes room");
    assert!(queue.next(usize::MAX, 20).is_none(), "20 bytes on the wire");
}

#[test]
fn busy_pauses_one_pair_and_resends_it_in_order() {
    let mut queue = Queue::default();
    for (seq, pair) in [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)] {
        queue.push(envelope(seq, pair, 9));
    }
    let now = Instant::now();
    assert_eq!(drain(&mut queue), vec![1, 4, 2, 5, 3]);
    queue.held(1);
    queue.busy(2, now);
    // The receiver answers BUSY to 3 too; nothing changes.
    queue.busy(3, now);
    queue.push(envelope(6, 2, 9));
    queue.push(envelope(7, 1, 9));
    assert_eq!(drain(&mut queue), vec![6], "the paused pair waits, the other goes on");
    queue.resume(now + BUSY_PAUSE);
    assert_eq!(drain(&mut queue), vec![2, 3, 7], "the paused pair again, in order");
}

#[test]
fn a_break_sends_everything_unanswered_again_and_final_removes() {
    let mut queue = Queue::default();
    for seq in 1..=3 {
        queue.push(envelope(seq, 1, 9));
    }
    assert_eq!(drain(&mut queue), vec![1, 2, 3]);
    queue.held(2);
    assert!(queue.finish(1).is_some());
    assert!(queue.finish(1).is_none(), "once");
    queue.requeue_all();
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(drain(&mut queue), vec![2, 3]);
    let gone = queue.drop_if(|e| e.seq == 3);
    assert_eq!(gone, vec![3]);
    assert_eq!(queue.len(), 1);
}

#[test]
fn a_held_message_is_sent_again_after_a_break_even_when_its_pair_had_nothing_else() {
    let mut queue = Queue::default();
    queue.push(envelope(1, 1, 9));
    queue.push(envelope(2, 1, 9));
    assert_eq!(drain(&mut queue), vec![1, 2]);
    queue.held(1);
    queue.finish(2);
    queue.requeue_all();
    assert_eq!(drain(&mut queue), vec![1], "the held message goes again");
}

#[test]
fn parking_hands_each_message_over_once_with_its_predecessor_in_the_pair() {
    let mut queue = Queue::default();
    for (seq, pair) in [(1, 1), (2, 2), (3, 1), (5, 1)] {
        queue.push(envelope(seq, pair, 9));
    }
    let parked: Vec<(u64, u64)> = queue.park_new().iter().map(|(e, prev)| (e.seq, *prev)).collect();
    assert_eq!(parked, vec![(1, 0), (2, 0), (3, 1), (5, 3)]);
    assert!(queue.park_new().is_empty(), "once");
    queue.unpark(3);
    queue.push(envelope(6, 2, 9));
    let parked: Vec<(u64, u64)> = queue.park_new().iter().map(|(e, prev)| (e.seq, *prev)).collect();
    assert_eq!(parked, vec![(3, 1), (6, 2)]);
}
