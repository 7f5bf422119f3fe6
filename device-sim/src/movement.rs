//! How a tracked thing moves: a vehicle, a bicycle or a pedestrian on a smooth path around a
//! centre. Speed eases toward a cruising speed that changes now and then, within the mode's
//! bounds; heading follows a turn rate that changes now and then (smooth turns, no jumps);
//! there are stops (lights, deliveries, rests); a mover that strays too far from the centre
//! steers back. The reported fix is the true position plus a few metres of GPS noise, and
//! sometimes no fix at all. Fully reproducible from a seed.

/// Metres per degree of latitude.
const METRES_PER_DEGREE: f64 = 111_320.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Vehicle,
    Bicycle,
    Pedestrian,
}

/// A mode's limits, in m/s and degrees per second.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_speed: f64,
    pub cruise: (f64, f64),
    pub acceleration: f64,
    pub max_turn_rate: f64,
    /// Chance per second of beginning a stop, and how long one lasts (s).
    pub stop_chance: f64,
    pub stop_seconds: (f64, f64),
    /// Battery drained per hour, in percent.
    pub drain_per_hour: f64,
}

impl Mode {
    pub fn limits(self) -> Limits {
        match self {
            Mode::Vehicle => Limits {
                max_speed: 110.0 / 3.6,
                cruise: (25.0 / 3.6, 70.0 / 3.6),
                acceleration: 2.5,
                max_turn_rate: 12.0,
                stop_chance: 1.0 / 240.0,
                stop_seconds: (15.0, 90.0),
                drain_per_hour: 1.5,
            },
            Mode::Bicycle => Limits {
                max_speed: 35.0 / 3.6,
                cruise: (12.0 / 3.6, 24.0 / 3.6),
                acceleration: 0.8,
                max_turn_rate: 20.0,
                stop_chance: 1.0 / 400.0,
                stop_seconds: (10.0, 120.0),
                drain_per_hour: 3.0,
            },
            Mode::Pedestrian => Limits {
                max_speed: 7.0 / 3.6,
                cruise: (3.5 / 3.6, 5.5 / 3.6),
                acceleration: 0.5,
                max_turn_rate: 30.0,
                stop_chance: 1.0 / 300.0,
                stop_seconds: (20.0, 300.0),
                drain_per_hour: 4.0,
            },
        }
    }
}

/// A small xorshift generator: deterministic, no dependencies, plenty for traffic.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        // splitmix64 of the seed: nearby seeds give unrelated streams, and none is zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Random((z ^ (z >> 31)) | 1)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn between(&mut self, (low, high): (f64, f64)) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Normal with mean 0 and standard deviation 1 (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// Where movers live: a centre and how far they may wander from it.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

impl Default for Area {
    /// Vancouver, as in the seed.
    fn default() -> Area {
        Area { lat: 49.28, lon: -123.12, radius_m: 8_000.0 }
    }
}

/// A position fix as a tracker reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// m/s, as the tracker measures it (with its noise).
    pub speed: f64,
    /// Degrees from north, clockwise.
    pub heading: f64,
}

#[derive(Debug, Clone)]
pub struct Mover {
    pub mode: Mode,
    area: Area,
    /// True position, in metres east and north of the centre.
    east: f64,
    north: f64,
    speed: f64,
    heading: f64,
    cruise: f64,
    turn_rate: f64,
    stopped_for: f64,
    battery: f64,
    /// Standard deviation of the GPS noise, metres.
    noise_m: f64,
    /// Chance that a fix is lost.
    lost_fix: f64,
    random: Random,
}

impl Mover {
    pub fn new(mode: Mode, area: Area, seed: u64) -> Mover {
        let mut random = Random::new(seed);
        let limits = mode.limits();
        let r = area.radius_m * random.uniform().sqrt() * 0.8;
        let angle = random.uniform() * std::f64::consts::TAU;
        Mover {
            mode,
            area,
            east: r * angle.cos(),
            north: r * angle.sin(),
            speed: random.between(limits.cruise),
            heading: random.uniform() * 360.0,
            cruise: random.between(limits.cruise),
            turn_rate: 0.0,
            stopped_for: 0.0,
            battery: random.between((55.0, 100.0)),
            noise_m: 3.0,
            lost_fix: 0.02,
            random,
        }
    }

    /// Moves on by `dt` seconds, in steps of at most a second so that turns stay smooth.
    pub fn advance(&mut self, dt: f64) {
        let mut left = dt.max(0.0);
        while left > 0.0 {
            let step = left.min(1.0);
            self.step(step);
            left -= step;
        }
        self.battery = (self.battery - self.mode.limits().drain_per_hour * dt / 3600.0).max(0.0);
    }

    fn step(&mut self, dt: f64) {
        let limits = self.mode.limits();
        let random = &mut self.random;
        if self.stopped_for > 0.0 {
            self.stopped_for -= dt;
            self.speed = (self.speed - limits.acceleration * 2.0 * dt).max(0.0);
            return;
        }
        if random.chance(limits.stop_chance * dt) {
            self.stopped_for = random.between(limits.stop_seconds);
        }
        // A new cruising speed, and a new turn, now and then.
        if random.chance(dt / 30.0) {
            self.cruise = random.between(limits.cruise);
        }
        if random.chance(dt / 8.0) {
            self.turn_rate = (random.uniform() - 0.5) * 2.0 * limits.max_turn_rate;
        } else if random.chance(dt / 4.0) {
            self.turn_rate *= 0.3;
        }
        // Far out: turn back toward the centre.
        let distance = self.east.hypot(self.north);
        if distance > self.area.radius_m {
            let home = (-self.east).atan2(-self.north).to_degrees().rem_euclid(360.0);
            let off = ((home - self.heading + 540.0).rem_euclid(360.0)) - 180.0;
            self.turn_rate = off.signum() * limits.max_turn_rate;
        }
        let change = (self.cruise - self.speed).clamp(-limits.acceleration * dt, limits.acceleration * dt);
        self.speed = (self.speed + change).clamp(0.0, limits.max_speed);
        self.heading = (self.heading + self.turn_rate * dt).rem_euclid(360.0);
        let metres = self.speed * dt;
        self.north += metres * self.heading.to_radians().cos();
        self.east += metres * self.heading.to_radians().sin();
    }

    /// The true position, in degrees.
    pub fn position(&self) -> (f64, f64) {
        let lat = self.area.lat + self.north / METRES_PER_DEGREE;
        let lon = self.area.lon + self.east / (METRES_PER_DEGREE * self.area.lat.to_radians().cos());
        (lat, lon)
    }

    /// What the tracker's GPS reports now: `None` when the fix is lost.
    pub fn fix(&mut self) -> Option<Fix> {
        if self.random.chance(self.lost_fix) {
            return None;
        }
        let (lat, lon) = self.position();
        let north_error = self.random.gaussian() * self.noise_m;
        let east_error = self.random.gaussian() * self.noise_m;
        Some(Fix {
            lat: lat + north_error / METRES_PER_DEGREE,
            lon: lon + east_error / (METRES_PER_DEGREE * self.area.lat.to_radians().cos()),
            speed: (self.speed + self.random.gaussian() * 0.2).max(0.0),
            heading: self.heading,
        })
    }

    /// The chance that a fix is lost (0 for a tracker that always has one).
    pub fn set_lost_fix(&mut self, chance: f64) {
        self.lost_fix = chance;
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn battery(&self) -> f64 {
        self.battery
    }

    /// The mover's own random stream, for what else a device decides (going offline...).
    pub fn random(&mut self) -> &mut Random {
        &mut self.random
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
        let north = (a.0 - b.0) * METRES_PER_DEGREE;
        let east = (a.1 - b.1) * METRES_PER_DEGREE * a.0.to_radians().cos();
        north.hypot(east)
    }

    #[test]
    fn speeds_stay_within_each_modes_bounds_and_paths_are_continuous() {
        for mode in [Mode::Vehicle, Mode::Bicycle, Mode::Pedestrian] {
            let limits = mode.limits();
            let mut stops = 0;
            for seed in 0..20 {
                let mut mover = Mover::new(mode, Area::default(), seed);
                let mut last = mover.position();
                for _ in 0..3_600 {
                    let was_moving = mover.speed() > 0.1;
                    mover.advance(1.0);
                    assert!(
                        mover.speed() >= 0.0 && mover.speed() <= limits.max_speed + 1e-9,
                        "{mode:?} {}",
                        mover.speed()
                    );
                    let here = mover.position();
                    // One second at most at the top speed: never a jump.
                    assert!(
                        distance_m(last, here) <= limits.max_speed + 1e-6,
                        "{mode:?} jumped {}",
                        distance_m(last, here)
                    );
                    if was_moving && mover.speed() < 0.1 {
                        stops += 1;
                    }
                    last = here;
                }
                assert!(distance_m(last, (49.28, -123.12)) < 12_000.0, "{mode:?} wandered off");
            }
            assert!(stops >= 20, "{mode:?} stopped {stops} times in 20 hours");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_track() {
        let track = |seed| {
            let mut mover = Mover::new(Mode::Bicycle, Area::default(), seed);
            (0..100)
                .map(|_| {
                    mover.advance(10.0);
                    mover.fix()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(track(42), track(42));
        assert_ne!(track(42), track(43));
    }

    #[test]
    fn fixes_are_a_few_metres_off_and_sometimes_lost() {
        let mut mover = Mover::new(Mode::Vehicle, Area::default(), 7);
        let (mut lost, mut errors) = (0, Vec::new());
        for _ in 0..5_000 {
            let truth = mover.position();
            match mover.fix() {
                None => lost += 1,
                Some(fix) => errors.push(distance_m(truth, (fix.lat, fix.lon))),
            }
        }
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        assert!(median > 1.0 && median < 8.0, "median GPS error {median} m");
        assert!(lost > 20 && lost < 250, "{lost} fixes lost of 5000");
    }

    #[test]
    fn batteries_drain() {
        let mut mover = Mover::new(Mode::Pedestrian, Area::default(), 3);
        let start = mover.battery();
        mover.advance(3_600.0);
        assert!((start - mover.battery() - 4.0).abs() < 1e-6);
    }
}
