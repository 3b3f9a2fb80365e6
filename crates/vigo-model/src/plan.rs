//! The ordered plan: declaration order refined by `depends_on` and `notify`.
//!
//! A resource runs after everything it depends on and after everything that
//! notifies it. Among resources free to run, declaration order wins (a stable
//! topological sort), so a configuration without links runs top to bottom.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How two resources are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// `from` depends on `to`: `to` runs first; if `to` fails, `from` is skipped.
    Depends,
    /// `from` notifies `to`: `to` runs after `from` and sees `changed` when `from` changed.
    Notify,
}

/// Resources in the order they run, as indexes into `Config::resources()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub order: Vec<usize>,
    /// `depends[i]`: the resources `i` depends on.
    pub depends: Vec<Vec<usize>>,
    /// `notifies[i]`: the resources `i` notifies.
    pub notifies: Vec<Vec<usize>>,
    /// `notified_by[i]`: the resources that notify `i`.
    pub notified_by: Vec<Vec<usize>>,
}

/// Orders `n` resources under `edges` (`(from, to, kind)`); on a cycle, returns it.
pub fn order(n: usize, edges: &[(usize, usize, Edge)]) -> Result<Plan, Vec<usize>> {
    let mut plan = Plan {
        order: Vec::with_capacity(n),
        depends: vec![Vec::new(); n],
        notifies: vec![Vec::new(); n],
        notified_by: vec![Vec::new(); n],
    };
    // `before[a]` lists resources that must wait for `a`.
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    for &(from, to, kind) in edges {
        let (first, then) = match kind {
            Edge::Depends => {
                push_unique(&mut plan.depends[from], to);
                (to, from)
            }
            Edge::Notify => {
                push_unique(&mut plan.notifies[from], to);
                push_unique(&mut plan.notified_by[to], from);
                (from, to)
            }
        };
        if !before[first].contains(&then) {
            before[first].push(then);
            waiting[then] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    while let Some(Reverse(i)) = ready.pop() {
        plan.order.push(i);
        for &j in &before[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    if plan.order.len() == n {
        return Ok(plan);
    }
    Err(find_cycle(&before, &waiting))
}

fn push_unique(v: &mut Vec<usize>, x: usize) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// A cycle among the nodes still waiting, as a path that returns to its start.
fn find_cycle(before: &[Vec<usize>], waiting: &[usize]) -> Vec<usize> {
    let stuck: Vec<bool> = waiting.iter().map(|&w| w > 0).collect();
    let Some(start) = stuck.iter().position(|&s| s) else { return Vec::new() };
    // Walk backwards along "waits for" links; every stuck node waits for another stuck node.
    let mut waits_for: Vec<Option<usize>> = vec![None; before.len()];
    for (a, nexts) in before.iter().enumerate() {
        for &b in nexts {
            if stuck[a] && stuck[b] && waits_for[b].is_none() {
                waits_for[b] = Some(a);
            }
        }
    }
    let mut path = vec![start];
    let mut cur = start;
    while let Some(prev) = waits_for[cur] {
        if let Some(pos) = path.iter().position(|&p| p == prev) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return cycle;
        }
        path.push(prev);
        cur = prev;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_order_without_links() {
        assert_eq!(order(3, &[]).expect("plan").order, vec![0, 1, 2]);
    }

    #[test]
    fn dependencies_move_only_what_they_must() {
        // 0 depends on 2: 2 must run before 0; 1 keeps its place relative to the rest.
        let p = order(4, &[(0, 2, Edge::Depends)]).expect("plan");
        assert_eq!(p.order, vec![1, 2, 0, 3]);
        assert_eq!(p.depends[0], vec![2]);
    }

    #[test]
    fn notify_runs_handler_after_notifier() {
        let p = order(3, &[(2, 0, Edge::Notify)]).expect("plan");
        assert_eq!(p.order, vec![1, 2, 0]);
        assert_eq!(p.notified_by[0], vec![2]);
    }

    #[test]
    fn cycles_are_reported_as_a_loop() {
        let cycle =
            order(3, &[(0, 1, Edge::Depends), (1, 2, Edge::Depends), (2, 0, Edge::Depends)]).expect_err("cycle");
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.first(), cycle.last());
        let self_loop = order(1, &[(0, 0, Edge::Notify)]).expect_err("self");
        assert_eq!(self_loop, vec![0, 0]);
    }
}
