//! `hostile-policy`: a tool policy (`tool-policy` world) that misbehaves
//! as its config (a JSON string) names, to show a policy cannot stall or take down
//! the host:
//!
//! | config  | what it does                              |
//! |---------|-------------------------------------------|
//! | `spin`  | computes forever                          |
//! | `hog`   | grows its memory without end              |
//! | `sleep` | sleeps an hour (blocks in a WASI poll)    |
//! | other   | allows the call                           |

#[allow(clippy::too_many_arguments)] // the flattened `tool-call-request`
mod bindings {
    wit_bindgen::generate!({
        path: "../../../plugins/sdk/wit",
        world: "tool-policy",
    });
}

use bindings::{Decision, Guest, ToolCallRequest};

struct Hostile;

impl Guest for Hostile {
    fn decide(call: ToolCallRequest) -> Decision {
        match call.config.trim().trim_matches('"') {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    held.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&held);
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Decision::Allow
            }
            _ => Decision::Allow,
        }
    }
}

bindings::export!(Hostile with_types_in bindings);
