//! `functions`: a component of plain functions (world `functions`, not the
//! `step` world) for the tests of `type: function` with `function:`.

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "functions" });
}

use bindings::exports::acme::functions::kinds::{Color, Guest as Kinds, Perms, Point, Shape};
use bindings::Guest;

struct Functions;

impl Guest for Functions {
    fn ping() -> String {
        "pong".to_string()
    }
}

impl Kinds for Functions {
    fn shout(text: String) -> String {
        text.to_uppercase()
    }

    fn add(a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    fn move_point(p: Point, dx: i32) -> Point {
        Point {
            x: p.x.wrapping_add(dx),
            y: p.y,
            label: p.label.map(|l| format!("{l}'")),
        }
    }

    fn area(s: Shape) -> f64 {
        match s {
            Shape::Circle(r) => 3.0 * r * r,
            Shape::Square(side) => f64::from(side) * f64::from(side),
            Shape::Empty => 0.0,
        }
    }

    fn next_color(c: Color) -> Color {
        match c {
            Color::Red => Color::Green,
            Color::Green => Color::Blue,
            Color::Blue => Color::Red,
        }
    }

    fn toggle(p: Perms) -> Perms {
        p ^ Perms::all()
    }

    fn first(items: Vec<u8>) -> Option<u8> {
        items.first().copied()
    }

    fn divide(a: u32, b: u32) -> Result<u32, String> {
        a.checked_div(b)
            .ok_or_else(|| "division by zero".to_string())
    }

    fn swap(t: (String, bool)) -> (bool, String) {
        (t.1, t.0)
    }

    fn upper(c: char) -> char {
        c.to_ascii_uppercase()
    }

    fn bytes(count: u32) -> Vec<u8> {
        (0..count).map(|i| i as u8).collect()
    }

    fn shapes(count: u8) -> Vec<Shape> {
        (0..count)
            .map(|i| match i % 3 {
                0 => Shape::Circle(f64::from(i)),
                1 => Shape::Square(u32::from(i)),
                _ => Shape::Empty,
            })
            .collect()
    }
}

bindings::export!(Functions with_types_in bindings);
