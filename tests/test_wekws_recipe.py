"""Smoke test of examples/wekws_recipe.py: convert and distil inside a wekws-style loop."""

from examples import wekws_recipe


def test_the_recipe_runs_and_the_compiled_student_matches(capsys):
    assert wekws_recipe.main(["--utterances", "64", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "teacher (FP)" in out and "student thin=2 (1 blocks)" in out
    diff = float(out.strip().splitlines()[-1].split()[3])
    assert diff < 1e-5  # the compiled program computes the student's logits


def test_the_pipeline_loss_sees_its_own_target():
    cfg = wekws_recipe.RecipeConfig()
    data = wekws_recipe.make_data(cfg, 6, seed=0)
    assert data.keyword.tolist() == [0, 1, -1, 0, 1, -1]
    logits = data.feats.new_zeros((6, cfg.frames, 2))
    logits[0, 3, 0] = 20.0  # a confident keyword-0 frame in the first utterance
    assert wekws_recipe.detect(logits, data.lengths)[0] == 0
    loss = wekws_recipe.criterion(logits, (data.keyword, data.lengths))
    assert loss > 0
