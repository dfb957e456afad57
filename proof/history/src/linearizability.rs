//! The linearizability search: can operations on one register `Free | Held(owner)`, each with
//! an interval of real time, be ordered so that each takes effect at one instant inside its
//! interval? Wing & Gong's search, with Lowe's just-in-time linearization and memo ([`search`]).
//!
//! This module owns the register model ([`RegisterEffect`]), its operations as the search sees
//! them ([`RegisterOperation`]: an effect, an interval, mandatory or optional), and the search.
//! It must never look at events, operations, owner names or reports: the checker reduces one
//! address's operations to register operations and turns a failed search into a violation. It
//! must stay sound and complete (a brute-force test holds it to that) and bounded in steps.

use std::collections::{HashMap, HashSet};

/// The register's "free" state; any other value is an owner id.
pub(crate) const FREE: u32 = u32::MAX;
/// Return time of an optional operation: it need never be linearized.
pub(crate) const T_OPTIONAL: u64 = u64::MAX;
/// Call and return time of the final read, after every real operation.
pub(crate) const T_FINAL: u64 = u64::MAX - 1;
/// Return time of an unknown operation that certainly happened: before the final read.
pub(crate) const T_BEFORE_FINAL: u64 = u64::MAX - 2;

/// What a register operation does to (or asserts of) the register of one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegisterEffect {
    /// Free -> Held(owner).
    Allocate(u32),
    /// Held(owner) -> Free; otherwise no change.
    Release(u32),
    /// The state is this owner (or `FREE`); no change.
    Read(u32),
    /// The state is Held(owner); no change.
    HeldBy(u32),
}

/// One operation on the register, as the search sees it.
pub(crate) struct RegisterOperation {
    /// What it does to the register.
    pub(crate) effect: RegisterEffect,
    /// When it was called (invoked).
    pub(crate) call: u64,
    /// When it returned: it took effect before (or `T_OPTIONAL`, `T_BEFORE_FINAL`, `T_FINAL`).
    pub(crate) ret: u64,
    /// Must be linearized (else it may be left out).
    pub(crate) mandatory: bool,
    /// The index of the checker's operation it comes from; `None` for the final read.
    pub(crate) source: Option<usize>,
}

/// What the search found.
pub(crate) enum Search {
    /// Every mandatory operation found its place.
    Linearizable,
    /// The step limit was reached first.
    Undecided,
    /// The longest linearized prefix (indices into the register operations) and the state
    /// after it.
    Fail { prefix: Vec<usize>, state: u32 },
}

/// Searches for a linearization of `operations` (sorted by call time) starting from Free.
///
/// The history is a doubly linked list of call and return entries in time order (calls before
/// returns at equal times: such operations count as concurrent). Walking from the head, an
/// operation whose call is reached may be linearized now; reaching the return of an operation
/// not yet linearized means the current prefix is a dead end, so the search backtracks. Visited
/// (linearized set, state) configurations are memoized, which bounds the search by the number
/// of distinct configurations. Prunings keep it small, all sound and complete:
///
/// - an operation that cannot change the state in any continuation (a read, a `held_by`, a
///   release whose owner's allocation is behind us) is linearized as soon as it can be,
///   without a branch: any linearization placing it later can place it there;
/// - an unknown operation is left out, without a branch, once it can no longer matter (an
///   allocation whose owner nothing will read or release any more, a release whose owner's
///   hold is over), and is not tried where it would change nothing.
///
/// The memo key stores the linearized set from its first gap on (every operation called
/// before it is linearized), so a long history costs memory by its concurrency, not its length.
pub(crate) fn search(operations: &[RegisterOperation], max_steps: u64) -> Search {
    let n = operations.len();
    let mandatory = operations.iter().filter(|o| o.mandatory).count();
    if mandatory == 0 {
        return Search::Linearizable;
    }
    // Owners, numbered locally: each has at most one allocation here, and some uses (the
    // releases, reads and refusals naming it).
    let mut local: HashMap<u32, usize> = HashMap::new();
    let owner: Vec<Option<usize>> = operations
        .iter()
        .map(|o| {
            let id = match o.effect {
                RegisterEffect::Allocate(x)
                | RegisterEffect::Release(x)
                | RegisterEffect::HeldBy(x) => x,
                RegisterEffect::Read(x) if x != FREE => x,
                RegisterEffect::Read(_) => return None,
            };
            let next = local.len();
            Some(*local.entry(id).or_insert(next))
        })
        .collect();
    let mut uses_left = vec![0usize; local.len()];
    let mut has_alloc = vec![false; local.len()];
    for (o, l) in operations.iter().zip(&owner) {
        if let Some(l) = *l {
            match o.effect {
                RegisterEffect::Allocate(_) => has_alloc[l] = true,
                _ => uses_left[l] += 1,
            }
        }
    }
    // Unknown operations that can never matter are left out from the start.
    let active: Vec<bool> = operations
        .iter()
        .zip(&owner)
        .map(|(o, l)| match (o.mandatory, o.effect, *l) {
            (false, RegisterEffect::Allocate(_), Some(l)) => uses_left[l] > 0,
            (false, RegisterEffect::Release(_), Some(l)) => has_alloc[l],
            _ => true,
        })
        .collect();
    // "The owner's allocation is behind us": linearized, left out, or absent.
    let mut alloc_done: Vec<bool> = has_alloc.iter().map(|h| !h).collect();
    for (i, o) in operations.iter().enumerate() {
        if let (false, RegisterEffect::Allocate(_), Some(l)) = (active[i], o.effect, owner[i]) {
            alloc_done[l] = true;
        }
    }

    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in operations.iter().enumerate().filter(|(i, _)| active[*i]) {
        entries.push((o.call, false, i));
        entries.push((o.ret, true, i));
    }
    entries.sort_unstable();
    // Node 0 is the head, 1..=m the entries, m+1 the tail.
    let m = entries.len();
    let (head, tail) = (0, m + 1);
    let mut next: Vec<usize> = (1..=tail + 1).collect();
    let mut prev: Vec<usize> = (0..=tail).map(|e| e.wrapping_sub(1)).collect();
    let mut is_ret = vec![false; tail + 1];
    let mut op_of = vec![0; tail + 1];
    let (mut call_e, mut ret_e) = (vec![0; n], vec![0; n]);
    for (k, &(_, r, i)) in entries.iter().enumerate() {
        is_ret[k + 1] = r;
        op_of[k + 1] = i;
        if r {
            ret_e[i] = k + 1;
        } else {
            call_e[i] = k + 1;
        }
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        for e in [call_e[i], ret_e[i]] {
            next[prev[e]] = next[e];
            prev[next[e]] = prev[e];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        for e in [ret_e[i], call_e[i]] {
            next[prev[e]] = e;
            prev[next[e]] = e;
        }
    };

    /// What to do with the operation whose call the walk reached.
    enum Act {
        /// Not now.
        Skip,
        /// Linearize it, with the alternative of trying it later.
        Branch(u32),
        /// Linearize it (or leave it out: `left_out`), without alternative.
        Force { state: u32, left_out: bool },
    }
    struct Frame {
        index: usize,
        prev_state: u32,
        forced: bool,
        left_out: bool,
        prev_alloc_done: bool,
    }
    let mut bits = vec![0u64; n.div_ceil(64)];
    // Memo key: (index of the first word with a gap, the words from there, state).
    let mut seen: HashSet<(u32, Box<[u64]>, u32)> = HashSet::new();
    let key = |bits: &[u64], state: u32| {
        let first = bits
            .iter()
            .position(|&w| w != u64::MAX)
            .unwrap_or(bits.len());
        let last = bits
            .iter()
            .rposition(|&w| w != 0)
            .map_or(first, |l| (l + 1).max(first));
        (first as u32, Box::<[u64]>::from(&bits[first..last]), state)
    };
    let mut stack: Vec<Frame> = Vec::new();
    let (mut state, mut done, mut steps) = (FREE, 0usize, 0u64);
    let (mut best, mut best_state) = (Vec::new(), FREE);
    let mut entry = next[head];
    loop {
        steps += 1;
        if steps > max_steps {
            return Search::Undecided;
        }
        let mut backtrack = entry == tail || is_ret[entry];
        if !backtrack {
            let i = op_of[entry];
            let o = &operations[i];
            let l = owner[i];
            let act = match o.effect {
                RegisterEffect::Allocate(x) => match l {
                    Some(l) if !o.mandatory && uses_left[l] == 0 => Act::Force {
                        state,
                        left_out: true,
                    },
                    _ if state == FREE => Act::Branch(x),
                    _ => Act::Skip,
                },
                RegisterEffect::Release(x) => {
                    let over = l.is_some_and(|l| alloc_done[l]) && state != x;
                    match (over, o.mandatory) {
                        (true, mandatory) => Act::Force {
                            state,
                            left_out: !mandatory,
                        },
                        _ if state == x => Act::Branch(FREE),
                        (false, true) => Act::Branch(state),
                        (false, false) => Act::Skip,
                    }
                }
                RegisterEffect::Read(v) | RegisterEffect::HeldBy(v) if v == state => Act::Force {
                    state,
                    left_out: false,
                },
                RegisterEffect::Read(_) | RegisterEffect::HeldBy(_) => Act::Skip,
            };
            let (after, forced, left_out) = match act {
                Act::Skip => (None, false, false),
                Act::Branch(s) => (Some(s), false, false),
                Act::Force { state, left_out } => (Some(state), true, left_out),
            };
            match after {
                None => entry = next[entry],
                Some(after) => {
                    bits[i / 64] |= 1 << (i % 64);
                    if seen.insert(key(&bits, after)) {
                        let mut prev_alloc_done = false;
                        if let Some(l) = l {
                            if let RegisterEffect::Allocate(_) = o.effect {
                                prev_alloc_done = alloc_done[l];
                                alloc_done[l] = true;
                            } else {
                                uses_left[l] -= 1;
                            }
                        }
                        stack.push(Frame {
                            index: i,
                            prev_state: state,
                            forced,
                            left_out,
                            prev_alloc_done,
                        });
                        state = after;
                        lift(&mut next, &mut prev, i);
                        if o.mandatory {
                            done += 1;
                            if done == mandatory {
                                return Search::Linearizable;
                            }
                        }
                        if stack.len() > best.len() {
                            best = stack
                                .iter()
                                .filter(|f| !f.left_out)
                                .map(|f| f.index)
                                .collect();
                            best_state = state;
                        }
                        entry = next[head];
                    } else {
                        bits[i / 64] &= !(1 << (i % 64));
                        // A forced step's configuration already failed: so does this one.
                        backtrack = forced;
                        entry = next[entry];
                    }
                }
            }
        }
        if backtrack {
            loop {
                let Some(f) = stack.pop() else {
                    return Search::Fail {
                        prefix: best,
                        state: best_state,
                    };
                };
                bits[f.index / 64] &= !(1 << (f.index % 64));
                state = f.prev_state;
                unlift(&mut next, &mut prev, f.index);
                if let Some(l) = owner[f.index] {
                    if let RegisterEffect::Allocate(_) = operations[f.index].effect {
                        alloc_done[l] = f.prev_alloc_done;
                    } else {
                        uses_left[l] += 1;
                    }
                }
                if operations[f.index].mandatory {
                    done -= 1;
                }
                if !f.forced {
                    entry = next[call_e[f.index]];
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every linearization, by brute force: all subsets of the optional operations, all
    /// orders that respect real time.
    fn brute_force(operations: &[RegisterOperation]) -> bool {
        fn place(
            operations: &[RegisterOperation],
            chosen: &[usize],
            placed: &mut Vec<bool>,
            state: u32,
        ) -> bool {
            if placed.iter().zip(chosen).all(|(p, _)| *p) {
                return true;
            }
            for (k, &i) in chosen.iter().enumerate() {
                let ready = !placed[k]
                    && chosen
                        .iter()
                        .zip(placed.iter())
                        .all(|(&j, &p)| p || j == i || operations[j].ret >= operations[i].call);
                if !ready {
                    continue;
                }
                let after = match operations[i].effect {
                    RegisterEffect::Allocate(o) => (state == FREE).then_some(o),
                    RegisterEffect::Release(o) => Some(if state == o { FREE } else { state }),
                    RegisterEffect::Read(v) | RegisterEffect::HeldBy(v) => {
                        (state == v).then_some(state)
                    }
                };
                if let Some(after) = after {
                    placed[k] = true;
                    if place(operations, chosen, placed, after) {
                        return true;
                    }
                    placed[k] = false;
                }
            }
            false
        }
        let optional: Vec<usize> = (0..operations.len())
            .filter(|&i| !operations[i].mandatory)
            .collect();
        (0..1u32 << optional.len()).any(|mask| {
            let chosen: Vec<usize> = (0..operations.len())
                .filter(|&i| {
                    operations[i].mandatory
                        || optional
                            .iter()
                            .position(|&j| j == i)
                            .is_some_and(|b| mask >> b & 1 == 1)
                })
                .collect();
            place(operations, &chosen, &mut vec![false; chosen.len()], FREE)
        })
    }

    #[test]
    fn search_agrees_with_brute_force() {
        let mut rng = Rng(1);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..30_000 {
            let mut operations = Vec::new();
            let owners = 1 + rng.below(3) as u32;
            for o in 0..owners {
                if rng.chance(80) {
                    let call = rng.below(20);
                    let (mandatory, ret) = match rng.below(4) {
                        0 => (false, T_OPTIONAL),
                        1 => (true, T_BEFORE_FINAL),
                        _ => (true, call + rng.below(10)),
                    };
                    operations.push(RegisterOperation {
                        effect: RegisterEffect::Allocate(o),
                        call,
                        ret,
                        mandatory,
                        source: None,
                    });
                }
            }
            for _ in 0..rng.below(7) {
                let call = rng.below(25);
                let o = rng.below(u64::from(owners) + 1) as u32;
                let v = if o == owners { FREE } else { o };
                let (effect, optional_ok) = match rng.below(3) {
                    0 if v != FREE => (RegisterEffect::Release(v), true),
                    1 if v != FREE => (RegisterEffect::HeldBy(v), false),
                    _ => (RegisterEffect::Read(v), false),
                };
                let (mandatory, ret) = if optional_ok && rng.chance(30) {
                    (false, T_OPTIONAL)
                } else {
                    (true, call + rng.below(10))
                };
                operations.push(RegisterOperation {
                    effect,
                    call,
                    ret,
                    mandatory,
                    source: None,
                });
            }
            if rng.chance(50) {
                let o = rng.below(u64::from(owners) + 1) as u32;
                let v = if o == owners { FREE } else { o };
                operations.push(RegisterOperation {
                    effect: RegisterEffect::Read(v),
                    call: T_FINAL,
                    ret: T_FINAL,
                    mandatory: true,
                    source: None,
                });
            }
            operations.sort_by_key(|o| o.call);
            let expected = brute_force(&operations);
            let got = match search(&operations, 1_000_000) {
                Search::Linearizable => true,
                Search::Fail { .. } => false,
                Search::Undecided => panic!("undecided on {} operations", operations.len()),
            };
            let shown: Vec<_> = operations
                .iter()
                .map(|o| (o.effect, o.call, o.ret, o.mandatory))
                .collect();
            assert_eq!(got, expected, "{shown:?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        eprintln!("search vs brute force: {yes} linearizable, {no} not");
        assert!(yes > 5_000 && no > 5_000);
    }

    /// splitmix64: a small seeded PRNG (no `rand` crate).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }
}
