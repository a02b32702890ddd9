#!/usr/bin/env python3
"""Reference scores from the official evaluation code, for calibq's scorer tests.

Runs pycocoevalcap (Bleu, Rouge, Cider; coco-caption's code) on the official PTBTokenizer
output of ../shared/eval-data/caption_*_tokens.json, the official VQA evaluation
(vqaEval.VQAEval) on vqa_{gt,preds}.json, and the DocVQA ANLS rule on anls_{gt,preds}.json,
and writes tests/data/metrics/official_scores.json.

Needs `pycocoevalcap` and `vqaEvaluation` (the VQA API's PythonEvaluationTools) on
PYTHONPATH, and numpy. Neither is vendored here:
    PYTHONPATH=/path/to/coco-caption:/path/to/VQA/PythonEvaluationTools \
        python3 scripts/reference/official_scores.py [--eval-data ../shared/eval-data]
"""
import argparse
import json
import os

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from vqaEvaluation.vqaEval import VQAEval


def caption_scores(tokens):
    gts = {k: v for k, v in tokens["refs"].items()}
    res = {k: [v] for k, v in tokens["cands"].items()}
    bleu, _ = Bleu(4).compute_score(gts, res)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    ids = list(gts.keys())
    return {"BLEU_1": bleu[0], "BLEU_2": bleu[1], "BLEU_3": bleu[2], "BLEU_4": bleu[3],
            "ROUGE_L": float(rouge), "CIDEr": float(cider),
            "ROUGE_L_per_image": {i: float(s) for i, s in zip(ids, rouge_per)},
            "CIDEr_per_image": {i: float(s) for i, s in zip(ids, cider_per)}}


class _QA:
    """The two attributes VQAEval reads of the VQA API objects."""

    def __init__(self, qa):
        self.qa = qa

    def getQuesIds(self):
        return list(self.qa.keys())


def vqa_scores(gt, preds):
    qa = {q: {"answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(ans)],
              "question_type": "", "answer_type": ""} for q, ans in gt.items()}
    res = {q: {"answer": preds[q]} for q in gt}
    ev = VQAEval(_QA(qa), _QA(res), n=2)
    ev.evaluate()
    per = {q: ev.evalQA[q] for q in gt}
    return {"accuracy": ev.accuracy["overall"], "per_question": per}


def levenshtein_distance(s1, s2):
    # As the DocVQA evaluation script computes it.
    if len(s1) > len(s2):
        s1, s2 = s2, s1
    distances = range(len(s1) + 1)
    for i2, c2 in enumerate(s2):
        distances_ = [i2 + 1]
        for i1, c1 in enumerate(s1):
            if c1 == c2:
                distances_.append(distances[i1])
            else:
                distances_.append(1 + min((distances[i1], distances[i1 + 1], distances_[-1])))
        distances = distances_
    return distances[-1]


def anls_scores(gt, preds, threshold=0.5):
    # The DocVQA / ST-VQA evaluation's per-question rule.
    per = {}
    for q, answers in gt.items():
        det = preds[q]
        values = []
        for answer in answers:
            gt_answer = " ".join(answer.strip().lower().split())
            det_answer = " ".join(det.strip().lower().split())
            dist = levenshtein_distance(gt_answer, det_answer)
            length = max(len(answer.upper()), len(det.upper()))
            values.append(0.0 if length == 0 else float(dist) / float(length))
        r = 1 - min(values)
        per[q] = 0 if r < threshold else r
    return {"anls": sum(per.values()) / len(per), "per_question": per}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-data", default=os.path.join(os.path.dirname(__file__), "../../../shared/eval-data"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/data/metrics/official_scores.json"))
    a = ap.parse_args()
    load = lambda n: json.load(open(os.path.join(a.eval_data, n), encoding="utf-8"))
    out = {"made_by": "scripts/reference/official_scores.py (pycocoevalcap, vqaEval.py, DocVQA ANLS rule)"}
    for s in ["fakecap", "heldout", "edge"]:
        out["caption_" + s] = caption_scores(load("caption_%s_tokens.json" % s))
    out["vqa"] = vqa_scores(load("vqa_gt.json"), load("vqa_preds.json"))
    out["anls"] = anls_scores(load("anls_gt.json"), load("anls_preds.json"))
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print({k: {m: v for m, v in out[k].items() if not isinstance(v, dict)} for k in out if k != "made_by"})


if __name__ == "__main__":
    main()
