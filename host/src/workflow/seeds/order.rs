//! agentcmd's implicit order: its files list phases as plain strings and
//! declare no `needs`; their steps run one after another, phase by phase,
//! and in file order within a phase.

use super::Reading;
use crate::workflow::model::Workflow;

/// When every phase is written as a plain string and no step declares
/// `needs`, chains the steps: phases in order, steps of a phase in file
/// order (a step without a phase keeps its place after the step before
/// it). A workflow with block phases or with any `needs` is left as it is.
pub fn implicit_order(wf: &mut Workflow, readings: &mut Vec<Reading>) {
    let applies = !wf.phases.is_empty()
        && wf.phases.iter().all(|p| p.written_as_string)
        && wf.steps.len() > 1
        && wf.steps.iter().all(|s| s.needs.is_empty() && !s.finally);
    if !applies {
        return;
    }
    // Sort key: the phase's position; a step without a (known) phase takes
    // the key of the step before it.
    let mut keys = Vec::with_capacity(wf.steps.len());
    let mut previous = 0usize;
    for step in &wf.steps {
        let key = step
            .phase
            .as_deref()
            .and_then(|phase| wf.phases.iter().position(|p| p.id == phase))
            .unwrap_or(previous);
        keys.push(key);
        previous = key;
    }
    let mut order: Vec<usize> = (0..wf.steps.len()).collect();
    order.sort_by_key(|&i| (keys[i], i));
    for pair in order.windows(2) {
        let before = wf.steps[pair[0]].id.clone();
        wf.steps[pair[1]].needs = vec![before];
    }
    readings.push(Reading {
        place: "steps".into(),
        written: "string phases and no `needs`".into(),
        read_as: format!(
            "one after another, phase by phase: {}",
            order
                .iter()
                .map(|&i| wf.steps[i].id.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::parse::{parse_str, Format};

    #[test]
    fn string_phases_without_needs_chain_the_steps_by_phase() {
        let mut wf = parse_str(
            "name: x\nphases: [build, test]\nsteps:\n  - {id: t, phase: test, run: a}\n  - {id: b1, phase: build, run: a}\n  - {id: loose, run: a}\n  - {id: b2, phase: build, run: a}\n",
            "wf.yaml",
            Format::Yaml,
        )
        .unwrap();
        let mut readings = Vec::new();
        implicit_order(&mut wf, &mut readings);
        let needs: Vec<(&str, Vec<String>)> = wf
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.needs.clone()))
            .collect();
        assert_eq!(
            needs,
            vec![
                ("t", vec!["b2".to_string()]),
                ("b1", vec![]),
                ("loose", vec!["b1".to_string()]),
                ("b2", vec!["loose".to_string()]),
            ]
        );
        assert!(
            readings[0].read_as.ends_with("b1 → loose → b2 → t"),
            "{readings:?}"
        );
    }

    #[test]
    fn any_needs_or_block_phases_keep_the_graph() {
        for src in [
            "name: x\nphases: [a]\nsteps:\n  - {id: s1, phase: a, run: x}\n  - {id: s2, phase: a, run: x, needs: [s1]}\n  - {id: s3, phase: a, run: x}\n",
            "name: x\nphases: [{id: a}]\nsteps:\n  - {id: s1, phase: a, run: x}\n  - {id: s2, phase: a, run: x}\n",
        ] {
            let mut wf = parse_str(src, "wf.yaml", Format::Yaml).unwrap();
            let before: Vec<Vec<String>> = wf.steps.iter().map(|s| s.needs.clone()).collect();
            let mut readings = Vec::new();
            implicit_order(&mut wf, &mut readings);
            let after: Vec<Vec<String>> = wf.steps.iter().map(|s| s.needs.clone()).collect();
            assert_eq!(before, after);
            assert!(readings.is_empty());
        }
    }
}
