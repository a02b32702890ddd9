// Caption tokenization as pycocoevalcap's PTBTokenizer does it: Stanford CoreNLP 3.4.1's
// PTBTokenizer (-preserveLines -lowerCase, PTB3 escaping) on each caption with newlines
// replaced by spaces, then the removal of pycocoevalcap's punctuation tokens.
//
// Written by hand: the official tokenizer is a Java program (a JFlex lexer) and no C++
// package does PTB tokenization. This follows the lexer's rules for what captions and
// answers contain (quotes to `` and '', brackets to -LRB- etc., clitics 's n't 're 've 'll
// 'd 'm split off, cannot/gonna/wanna/gotta split, abbreviations keep their period, $ and %
// split from numbers, = and + split, Unicode dashes, ellipses and quotes normalized), and is
// tested token for token against the official output on COCO captions
// (../shared/eval-data/caption_*_tokens.json).
#pragma once

#include <string>
#include <vector>

namespace calibq {

// The PTB tokens of one line, lower-cased, before punctuation removal.
std::vector<std::string> ptb_tokens(const std::string& line);

// pycocoevalcap's output for one caption: tokens joined by single spaces, without the
// tokens '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ; (matched exactly, so the
// lower-cased -lrb- and -rrb- stay, as they do in the official output).
std::string coco_tokenize(const std::string& caption);

}  // namespace calibq
