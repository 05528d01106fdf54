use sluice_policy::{export_policy, Config, Context, Decision, Policy, Stage};
struct P;
impl Policy for P {
    const STAGES: &'static [Stage] = &[Stage::Mail];
    fn init(_config: &Config) -> Result<Self, String> { Ok(P) }
    fn on_mail(&mut self, _ctx: &Context) -> Decision { Decision::reject("nope") }
}
export_policy!(P);
