//! The step DAG: indices, edges, topological order, ancestors, cycles, and
//! Mermaid / Graphviz renderings.
//!
//! Node `i` of a [`Graph`] is `wf.steps[i]`.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use super::model::Workflow;

/// The dependency graph of a workflow's steps.
///
/// Built with [`Graph::new`]; `needs` entries that name no step and a step
/// needing itself are ignored (validation reports both), and repeated
/// entries count once. When ids are
/// repeated, lookups by id find the first step with that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    /// Builds the graph of `wf.steps`.
    pub fn new(wf: &Workflow) -> Graph {
        let ids: Vec<String> = wf.steps.iter().map(|s| s.id.clone()).collect();
        let mut index = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            index.entry(id.clone()).or_insert(i);
        }
        let mut deps = vec![Vec::new(); ids.len()];
        let mut dependents = vec![Vec::new(); ids.len()];
        for (i, step) in wf.steps.iter().enumerate() {
            for need in &step.needs {
                if let Some(&j) = index.get(need) {
                    if j != i && !deps[i].contains(&j) {
                        deps[i].push(j);
                        dependents[j].push(i);
                    }
                }
            }
        }
        Graph {
            ids,
            index,
            deps,
            dependents,
        }
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    #[cfg(test)]
    /// True when there are no steps.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    #[cfg(test)]
    /// The id of step `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The index of the (first) step with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The steps `i` needs directly, in the order of its `needs`.
    pub fn deps(&self, i: usize) -> &[usize] {
        self.deps.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The steps that need `i` directly, in file order.
    pub fn dependents(&self, i: usize) -> &[usize] {
        self.dependents.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    #[cfg(test)]
    /// Steps with no needs, in file order.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.deps[i].is_empty())
            .collect()
    }

    #[cfg(test)]
    /// All steps `i` needs, directly or transitively (never `i` itself unless
    /// it is on a cycle).
    pub fn ancestors(&self, i: usize) -> BTreeSet<usize> {
        self.reach(i, &self.deps)
    }

    /// Whether step `i` needs step `j`, directly or transitively. Stops at
    /// the first path found (a direct need at once), so asking it for every
    /// step of a long chain stays linear where [`Graph::ancestors`] of each
    /// would be quadratic.
    pub fn needs(&self, i: usize, j: usize) -> bool {
        let Some(direct) = self.deps.get(i) else {
            return false;
        };
        if direct.contains(&j) {
            return true;
        }
        let mut seen = vec![false; self.len()];
        let mut stack = direct.clone();
        while let Some(n) = stack.pop() {
            if n == j {
                return true;
            }
            if !std::mem::replace(&mut seen[n], true) {
                stack.extend(self.deps[n].iter().copied());
            }
        }
        false
    }

    /// All steps that need `i`, directly or transitively.
    pub fn descendants(&self, i: usize) -> BTreeSet<usize> {
        self.reach(i, &self.dependents)
    }

    fn reach(&self, start: usize, edges: &[Vec<usize>]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = edges.get(start).cloned().unwrap_or_default();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(edges[n].iter().copied());
            }
        }
        seen
    }

    /// A topological order (Kahn's algorithm, ties broken by file order):
    /// every step comes after all it needs. Steps on or behind a cycle are
    /// left out; a graph returned by validation has no cycle.
    pub fn topo_order(&self) -> Vec<usize> {
        let mut indegree: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..self.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for &d in &self.dependents[n] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    #[cfg(test)]
    /// Groups steps by depth: level 0 has the roots, level `k` the steps whose
    /// deepest need is on level `k - 1`. Steps on cycles are left out.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for n in self.topo_order() {
            let d = self.deps[n]
                .iter()
                .map(|&p| depth[p] + 1)
                .max()
                .unwrap_or(0);
            depth[n] = d;
            if levels.len() <= d {
                levels.resize_with(d + 1, Vec::new);
            }
            levels[d].push(n);
        }
        for level in &mut levels {
            level.sort_unstable();
        }
        levels
    }

    /// Finds a cycle and returns it as ids, first id repeated at the end
    /// (`["a", "b", "a"]`), following `needs` edges. `None` when acyclic.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS with colours: 0 = new, 1 = on stack, 2 = done.
        let mut colour = vec![0u8; self.len()];
        for start in 0..self.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = self.deps[node].get(*next) {
                    *next += 1;
                    match colour[child] {
                        0 => {
                            colour[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|&(n, _)| n == child).unwrap_or(0);
                            let mut path: Vec<String> = stack[pos..]
                                .iter()
                                .map(|&(n, _)| self.ids[n].clone())
                                .collect();
                            path.push(self.ids[child].clone());
                            return Some(path);
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = 2;
                    stack.pop();
                }
            }
        }
        None
    }
}

/// Formats a cycle path as `a → b → a`.
pub fn cycle_text(path: &[String]) -> String {
    path.join(" → ")
}

/// Steps grouped for display: `(phase id, display name, step indices)`; the
/// group with phase `None` holds steps without a phase.
type Groups = Vec<(Option<String>, String, Vec<usize>)>;

/// Groups steps by phase: declared phases first (in order), then phases only
/// named by steps, then steps without a phase.
fn group_by_phase(wf: &Workflow) -> Groups {
    let mut groups: Groups = wf
        .phases
        .iter()
        .map(|p| {
            let label = p.name.clone().unwrap_or_else(|| p.id.clone());
            (Some(p.id.clone()), label, Vec::new())
        })
        .collect();
    let mut loose = Vec::new();
    for (i, step) in wf.steps.iter().enumerate() {
        match &step.phase {
            None => loose.push(i),
            Some(phase) => {
                if let Some(g) = groups
                    .iter_mut()
                    .find(|g| g.0.as_deref() == Some(phase.as_str()))
                {
                    g.2.push(i);
                } else {
                    groups.push((Some(phase.clone()), phase.clone(), vec![i]));
                }
            }
        }
    }
    groups.retain(|g| !g.2.is_empty());
    groups.push((None, String::new(), loose));
    groups
}

/// The label shown for step `i`: its `name`, else its id.
fn label(wf: &Workflow, i: usize) -> &str {
    let step = &wf.steps[i];
    step.name.as_deref().unwrap_or(&step.id)
}

/// Edges `(need, step)` in file order, repeated and unknown needs dropped.
fn edges(wf: &Workflow) -> Vec<(usize, usize)> {
    let graph = Graph::new(wf);
    let mut out = Vec::new();
    for i in 0..graph.len() {
        for &d in graph.deps(i) {
            out.push((d, i));
        }
    }
    out
}

const MERMAID_KEYWORDS: &[&str] = &[
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "style",
    "class",
    "classdef",
    "click",
    "linkstyle",
    "direction",
    "default",
    "call",
    "href",
];

/// The Mermaid node id of step `i`: the step id when it is a plain
/// identifier Mermaid accepts, else a generated `s__<i>`.
fn mermaid_node_id(wf: &Workflow, i: usize) -> String {
    let id = &wf.steps[i].id;
    let plain = !id.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !id.starts_with(|c: char| c.is_ascii_digit())
        && !id.starts_with("s__")
        && !id.starts_with("p__")
        && !MERMAID_KEYWORDS.contains(&id.to_ascii_lowercase().as_str());
    if plain {
        id.clone()
    } else {
        format!("s__{i}")
    }
}

/// Escapes text for a quoted Mermaid label (entity codes; newlines become
/// spaces).
fn mermaid_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Renders the workflow as a Mermaid `flowchart TD`, with one subgraph per
/// phase and an edge `need --> step` per dependency.
/// Each step's depth: 0 for steps that need nothing, else one more than
/// its deepest need (steps on a cycle stay 0).
fn depths(graph: &Graph) -> Vec<usize> {
    let mut depth = vec![0usize; graph.len()];
    for n in graph.topo_order() {
        depth[n] = graph
            .deps(n)
            .iter()
            .map(|&p| depth[p] + 1)
            .max()
            .unwrap_or(0);
    }
    depth
}

/// The graph for a terminal: steps in the order they can run, indented by
/// depth, each with its phase and what it needs.
///
/// ```text
/// plan
///   build       [make]  ← plan
///     test      [check] ← build
/// ```
pub fn to_text(wf: &Workflow) -> String {
    let graph = Graph::new(wf);
    let depth = depths(&graph);
    let rows: Vec<(String, usize)> = graph
        .topo_order()
        .into_iter()
        .map(|i| (format!("{}{}", "  ".repeat(depth[i]), wf.steps[i].id), i))
        .collect();
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, i) in rows {
        let step = &wf.steps[i];
        let mut line = format!("{name:<width$}");
        if let Some(phase) = &step.phase {
            line.push_str(&format!("  [{phase}]"));
        }
        if !step.needs.is_empty() {
            line.push_str(&format!("  ← {}", step.needs.join(", ")));
        }
        if step.finally {
            line.push_str("  (finally)");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The graph as JSON: `{"steps": [{"id", "phase", "needs", "depth"}]}` in
/// the order the steps can run.
pub fn to_json(wf: &Workflow) -> serde_json::Value {
    let graph = Graph::new(wf);
    let depth = depths(&graph);
    let steps: Vec<serde_json::Value> = graph
        .topo_order()
        .into_iter()
        .map(|i| {
            let step = &wf.steps[i];
            serde_json::json!({
                "id": step.id,
                "phase": step.phase,
                "needs": step.needs,
                "depth": depth[i],
                "finally": step.finally,
            })
        })
        .collect();
    serde_json::json!({ "name": wf.name, "steps": steps })
}

pub fn to_mermaid(wf: &Workflow) -> String {
    let mut out = String::from("flowchart TD\n");
    for (g, (phase, title, members)) in group_by_phase(wf).into_iter().enumerate() {
        let indent = if phase.is_some() {
            let _ = writeln!(out, "  subgraph p__{g}[\"{}\"]", mermaid_escape(&title));
            "    "
        } else {
            "  "
        };
        for i in members {
            let _ = writeln!(
                out,
                "{indent}{}[\"{}\"]",
                mermaid_node_id(wf, i),
                mermaid_escape(label(wf, i))
            );
        }
        if phase.is_some() {
            out.push_str("  end\n");
        }
    }
    for (from, to) in edges(wf) {
        let _ = writeln!(
            out,
            "  {} --> {}",
            mermaid_node_id(wf, from),
            mermaid_node_id(wf, to)
        );
    }
    out
}

/// Escapes text for a double-quoted Graphviz string.
fn dot_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Renders the workflow as a Graphviz `digraph`, with one `cluster_<n>`
/// subgraph per phase and an edge `"need" -> "step"` per dependency.
pub fn to_dot(wf: &Workflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&wf.name));
    out.push_str("  rankdir=TB;\n  node [shape=box];\n");
    for (g, (phase, title, members)) in group_by_phase(wf).into_iter().enumerate() {
        let indent = if phase.is_some() {
            let _ = writeln!(out, "  subgraph cluster_{g} {{");
            let _ = writeln!(out, "    label=\"{}\";", dot_escape(&title));
            "    "
        } else {
            "  "
        };
        for i in members {
            let _ = writeln!(
                out,
                "{indent}\"{}\" [label=\"{}\"];",
                dot_escape(&wf.steps[i].id),
                dot_escape(label(wf, i))
            );
        }
        if phase.is_some() {
            out.push_str("  }\n");
        }
    }
    for (from, to) in edges(wf) {
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\";",
            dot_escape(&wf.steps[from].id),
            dot_escape(&wf.steps[to].id)
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::parse::{parse_str, Format};

    fn wf(src: &str) -> Workflow {
        parse_str(src, "wf.yaml", Format::Yaml).unwrap()
    }

    /// a → b, a → c, b,c → d
    fn diamond() -> Workflow {
        wf("name: d\nsteps:\n  - {id: a, run: x}\n  - {id: b, run: x, needs: [a]}\n  - {id: c, run: x, needs: [a, a]}\n  - {id: d, run: x, needs: [b, c]}\n")
    }

    #[test]
    fn indexes_and_edges() {
        let g = Graph::new(&diamond());
        assert_eq!(g.len(), 4);
        assert!(!g.is_empty());
        assert_eq!(g.index_of("c"), Some(2));
        assert_eq!(g.index_of("zz"), None);
        assert_eq!(g.id(3), "d");
        assert_eq!(g.deps(3), &[1, 2]);
        assert_eq!(g.deps(2), &[0], "repeated needs count once");
        assert_eq!(g.dependents(0), &[1, 2]);
        assert_eq!(g.dependents(3), &[] as &[usize]);
        assert_eq!(g.deps(99), &[] as &[usize]);
        assert_eq!(g.roots(), vec![0]);
    }

    #[test]
    fn ancestors_and_descendants_are_transitive() {
        let g = Graph::new(&diamond());
        assert_eq!(g.ancestors(3), BTreeSet::from([0, 1, 2]));
        assert_eq!(g.ancestors(1), BTreeSet::from([0]));
        assert!(g.ancestors(0).is_empty());
        assert_eq!(g.descendants(0), BTreeSet::from([1, 2, 3]));
        assert!(g.ancestors(42).is_empty());
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(
                    g.needs(i, j),
                    g.ancestors(i).contains(&j),
                    "needs({i}, {j})"
                );
            }
        }
        assert!(!g.needs(42, 0));
    }

    #[test]
    fn topo_order_respects_needs_and_file_order() {
        let w = wf("name: t\nsteps:\n  - {id: z, run: x, needs: [y]}\n  - {id: y, run: x}\n  - {id: x, run: x}\n");
        let g = Graph::new(&w);
        assert_eq!(g.topo_order(), vec![1, 0, 2]);
        assert_eq!(Graph::new(&diamond()).topo_order(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn levels_group_by_depth() {
        let g = Graph::new(&diamond());
        assert_eq!(g.levels(), vec![vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn unknown_needs_are_ignored() {
        let w = wf("name: t\nsteps:\n  - {id: a, run: x, needs: [nope]}\n");
        let g = Graph::new(&w);
        assert!(g.deps(0).is_empty());
        assert_eq!(g.topo_order(), vec![0]);
    }

    #[test]
    fn finds_cycle_path() {
        let w = wf("name: c\nsteps:\n  - {id: a, run: x, needs: [c]}\n  - {id: b, run: x, needs: [a]}\n  - {id: c, run: x, needs: [b]}\n  - {id: d, run: x}\n");
        let g = Graph::new(&w);
        let cycle = g.find_cycle().unwrap();
        assert_eq!(cycle, vec!["a", "c", "b", "a"]);
        assert_eq!(cycle_text(&cycle), "a → c → b → a");
        assert_eq!(g.topo_order(), vec![3], "cycle members are left out");
        assert!(Graph::new(&diamond()).find_cycle().is_none());
    }

    #[test]
    fn self_need_is_ignored() {
        let w = wf("name: c\nsteps:\n  - {id: a, run: x, needs: [a]}\n");
        let g = Graph::new(&w);
        assert!(g.find_cycle().is_none());
        assert!(g.deps(0).is_empty());
    }

    #[test]
    fn cycle_behind_acyclic_prefix() {
        let w = wf("name: c\nsteps:\n  - {id: s, run: x, needs: [a]}\n  - {id: a, run: x, needs: [b]}\n  - {id: b, run: x, needs: [a]}\n");
        assert_eq!(
            cycle_text(&Graph::new(&w).find_cycle().unwrap()),
            "a → b → a"
        );
    }

    #[test]
    fn duplicate_ids_resolve_to_first() {
        let w = wf("name: c\nsteps:\n  - {id: a, run: x}\n  - {id: a, run: y}\n  - {id: b, run: x, needs: [a]}\n");
        let g = Graph::new(&w);
        assert_eq!(g.index_of("a"), Some(0));
        assert_eq!(g.deps(2), &[0]);
    }

    fn phased() -> Workflow {
        wf(r#"name: 'My "flow"'
phases:
  - {id: prep, name: 'Prepare <stuff> & "things"'}
  - {id: check}
steps:
  - {id: parse, name: 'Parse "input"', phase: prep, run: x}
  - {id: lint, phase: check, needs: [parse], run: x}
  - {id: test-all, phase: check, needs: [parse], run: x}
  - {id: end, needs: [lint, test-all], run: x}
"#)
    }

    #[test]
    fn mermaid_output() {
        let expected = r#"flowchart TD
  subgraph p__0["Prepare #lt;stuff#gt; #amp; #quot;things#quot;"]
    parse["Parse #quot;input#quot;"]
  end
  subgraph p__1["check"]
    lint["lint"]
    s__2["test-all"]
  end
  s__3["end"]
  parse --> lint
  parse --> s__2
  lint --> s__3
  s__2 --> s__3
"#;
        assert_eq!(to_mermaid(&phased()), expected);
    }

    #[test]
    fn mermaid_without_phases_and_undeclared_phase_names() {
        let w = wf("name: x\nsteps:\n  - {id: a, run: x, phase: p}\n  - {id: b, run: x, needs: [a], name: \"x#y\"}\n");
        assert_eq!(
            to_mermaid(&w),
            "flowchart TD\n  subgraph p__0[\"p\"]\n    a[\"a\"]\n  end\n  b[\"x#35;y\"]\n  a --> b\n"
        );
    }

    #[test]
    fn dot_output() {
        let expected = r#"digraph "My \"flow\"" {
  rankdir=TB;
  node [shape=box];
  subgraph cluster_0 {
    label="Prepare <stuff> & \"things\"";
    "parse" [label="Parse \"input\""];
  }
  subgraph cluster_1 {
    label="check";
    "lint" [label="lint"];
    "test-all" [label="test-all"];
  }
  "end" [label="end"];
  "parse" -> "lint";
  "parse" -> "test-all";
  "lint" -> "end";
  "test-all" -> "end";
}
"#;
        assert_eq!(to_dot(&phased()), expected);
    }

    #[test]
    fn dot_escapes_backslash_and_newline() {
        assert_eq!(dot_escape("a\\b\nc\"d"), "a\\\\b\\nc\\\"d");
    }
}
