// Trains the bundled sentence embedder resources/models/tiny-ja-embedder: a 2-layer BERT over
// characters, mean-pooled and L2-normalised exactly as EncoderEmbedder embeds, taught with an
// in-batch contrastive loss (InfoNCE, both directions) on question/passage pairs that it generates
// from templates written for this project (persona facts: name, hometown, hobby, ...; and everyday
// topics: weather, recipes, trains, ...). It never reads the retrieval example set
// (resources/retrieval): the tests judge the model there. A toy, not a substitute for e5 or ruri;
// it exists so that the dense half of hybrid search is a real ranking in tests and demos.
//
//   build/release/bin/train_tiny_embedder -o resources/models/tiny-ja-embedder [--steps 3000] [--seed 0]
//
// Retraining gives a model of the same quality, not the same bytes (BLAS sums are not ordered).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/model/bert_encoder.h"
#include "core/text/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------- the generated pairs

using Words = std::vector<std::string>;

struct Person {
  std::string family, given, nickname;
  std::string hometown, home, hobby, hobby2, job, food, dislike, subject, language, music, pet, petName, family2, dream;
  int month = 1, day = 1, age = 20;
};

struct Topic {
  std::string name;
  Words questions;
  Words passages;
};

// Slots: {N} full name, {F} family name, {G} given name, {K} nickname, {P} hometown, {C} where they
// live now, {H}/{H2} hobbies, {J} job, {FD} favourite food, {DL} disliked food, {M}/{D} birthday,
// {A} age, {S} subject, {L} language, {U} music, {X} pet, {XN} pet's name, {FM} family, {DR} dream;
// generic topics use {w1}..{w3} from their own word lists and {n} a number.
std::vector<Topic> personaTopics() {
  return {
      {"name",
       {"あなたの名前は何ですか", "お名前を教えてください", "名前はなんといいますか?", "君の名前は?", "なんて呼べばいいですか",
        "あなたは誰ですか", "自己紹介をお願いします", "フルネームを教えて", "{F}さんの下の名前は?", "あだ名はありますか",
        "名前の読み方を教えてください", "お名前は？"},
       {"私の名前は{N}です。", "{N}と申します。", "はじめまして、{N}です。", "名前は{F}{G}、みんなからは「{K}」と呼ばれています。",
        "{F}です。下の名前は{G}といいます。", "{N}といいます。気軽に{K}と呼んでください。", "あだ名は{K}です。本名は{N}です。"}},
      {"hometown",
       {"出身はどこですか", "どこの生まれですか?", "生まれ故郷はどこ?", "地元はどこですか", "どこで育ったの?", "ご出身は？",
        "子どもの頃はどこに住んでいましたか", "どこの県の出身ですか"},
       {"{P}の出身です。", "生まれも育ちも{P}です。", "{P}で生まれ、高校を出るまでそこで暮らしました。", "地元は{P}で、{scene}。",
        "出身地は{P}です。{scene}。", "子どもの頃は{P}で育ちました。"}},
      {"home",
       {"今どこに住んでいますか", "お住まいはどちらですか", "家はどこにありますか", "いまはどこで暮らしていますか",
        "一人暮らしですか"},
       {"今は{C}に住んでいます。", "{C}のアパートで一人暮らしをしています。", "就職してから{C}で暮らしています。",
        "住んでいるのは{C}で、駅まで歩いて十分です。"}},
      {"hobby",
       {"趣味は何ですか", "休みの日は何をしていますか", "好きなことは何?", "暇なときは何をして過ごしますか", "週末の過ごし方を教えて",
        "最近はまっていることは?", "{H}はしますか", "休日の楽しみは何ですか"},
       {"趣味は{H}です。", "休日はたいてい{H}をしています。", "{H}が好きで、週末によくやっています。", "最近は{H}にはまっています。",
        "趣味は{H}と{H2}です。", "休みの日は{H}をして過ごします。"}},
      {"job",
       {"お仕事は何ですか", "職業は?", "どんな仕事をしていますか", "どこで働いていますか", "普段は何の仕事をしているの?",
        "仕事について教えてください"},
       {"{J}として働いています。", "仕事は{J}です。", "{J}をしています。毎朝早く出勤します。", "職業は{J}で、今年で五年目になります。",
        "{J}の仕事は忙しいですが、やりがいがあります。"}},
      {"food",
       {"好きな食べ物は何ですか", "一番好きな料理は?", "好物はありますか", "苦手な食べ物はありますか", "嫌いな食べ物は?",
        "食べられないものはある?", "何を食べるのが好き?"},
       {"好きな食べ物は{FD}です。", "{FD}が大好物です。", "{FD}なら毎日でも食べられます。", "{DL}が苦手です。",
        "嫌いな食べ物は{DL}です。", "好物は{FD}で、{DL}だけはどうしても食べられません。"}},
      {"birthday",
       {"誕生日はいつですか", "何月生まれですか", "年齢はいくつですか", "何歳ですか?", "おいくつですか", "生年月日を教えて",
        "誕生日を教えてください"},
       {"誕生日は{M}月{D}日です。", "{M}月{D}日生まれの{A}歳です。", "今年で{A}歳になります。", "年齢は{A}歳です。",
        "{M}月{D}日が誕生日で、毎年家族がお祝いしてくれます。"}},
      {"family",
       {"家族は何人ですか", "兄弟はいますか", "ご家族について教えて", "何人家族ですか"},
       {"家族は{FM}です。", "{FM}と暮らしてきました。", "実家には{FM}がいます。"}},
      {"pet",
       {"ペットを飼っていますか", "動物は飼っていますか?", "飼っている動物は何ですか", "ペットの名前は?"},
       {"{X}を飼っています。名前は{XN}です。", "家には{X}の{XN}がいます。", "{XN}という{X}と暮らしています。"}},
      {"study",
       {"大学で何を勉強しましたか", "専攻は何ですか", "学生時代は何を学んだ?", "何を研究していましたか"},
       {"大学では{S}を専攻しました。", "学生のころは{S}を勉強していました。", "{S}の研究室に入っていました。"}},
      {"language",
       {"何語が話せますか", "外国語はできますか", "英語は話せますか?"},
       {"{L}を少し話せます。", "{L}が得意です。", "外国語は{L}を勉強しています。"}},
      {"music",
       {"好きな音楽は何ですか", "どんな曲を聴きますか", "よく聴く音楽は?"},
       {"{U}をよく聴きます。", "好きな音楽は{U}です。", "通勤中はいつも{U}を聴いています。"}},
      {"dream",
       {"将来の夢は何ですか", "これからやりたいことは?", "目標はありますか"},
       {"いつか{DR}のが夢です。", "将来は{DR}つもりです。", "目標は{DR}ことです。"}},
  };
}

struct GenericTopic {
  Topic t;
  std::vector<Words> slots;  // {w1}, {w2}, {w3}
};

std::vector<GenericTopic> genericTopics() {
  return {
      {{"weather",
        {"明日の天気はどうですか", "週末は雨が降りますか", "今日は寒いですか", "台風は来ますか", "天気予報を教えて", "{w1}の気温は?"},
        {"明日の{w1}は{w2}で、最高気温は{n}度の予想です。", "週末は前線の影響で{w2}でしょう。", "台風{n}号が{w1}に近づいています。",
         "{w1}では朝から{w2}が続き、気温が下がっています。"}},
       {{"東京", "大阪", "札幌", "福岡", "名古屋", "仙台", "那覇"}, {"晴れ", "雨", "くもり", "雪", "にわか雨", "強い風"}, {}}},
      {{"recipe",
        {"{w1}の作り方は?", "{w1}はどうやって作りますか", "{w1}の材料は何が必要ですか", "料理のコツを教えて", "{w1}のレシピを知りたい"},
        {"{w1}の材料は{w2}と{w3}です。", "鍋に{w2}を入れて{n}分煮込みます。", "フライパンで{w2}を炒め、塩と{w3}で味を調えます。",
         "{w1}は{w2}を細かく切るところから始めます。"}},
       {{"カレー", "肉じゃが", "味噌汁", "オムライス", "焼きそば", "ハンバーグ", "親子丼"},
        {"玉ねぎ", "じゃがいも", "豚肉", "卵", "にんじん", "キャベツ", "鶏肉"},
        {"しょうゆ", "みりん", "砂糖", "こしょう", "バター", "味噌"}}},
      {{"train",
        {"{w1}駅への行き方は?", "乗り換えはどこですか", "始発は何時ですか", "{w1}まで新幹線で何分かかりますか", "{w2}は遅れていますか"},
        {"{w2}に乗り、{w1}駅で乗り換えます。", "{w1}駅までは新幹線で約{n}分です。", "始発は午前{n}時台に出発します。",
         "{w2}は人身事故の影響で運転を見合わせています。"}},
       {{"新宿", "京都", "博多", "名古屋", "上野", "横浜", "大宮"}, {"山手線", "中央線", "東海道線", "地下鉄", "快速電車", "特急"}, {}}},
      {{"history",
        {"{w1}時代について教えて", "{w2}は何をした人ですか", "その城はいつ建てられましたか", "{w1}時代の文化は?"},
        {"{w1}時代には各地で城が築かれ、商業が盛んになりました。", "{w2}は{n}年ごろに活躍した人物です。",
         "この城は{w1}時代に建てられ、のちに再建されました。", "{w1}時代の人々は年貢を米で納めていました。"}},
       {{"江戸", "平安", "鎌倉", "室町", "明治", "戦国"}, {"織田信長", "徳川家康", "豊臣秀吉", "紫式部", "坂本龍馬"}, {}}},
      {{"programming",
        {"{w1}でエラーが出ます", "関数の書き方は?", "変数とは何ですか", "コードが動きません", "{w1}でファイルを読むには?"},
        {"{w1}では関数を定義してから呼び出します。", "このエラーは変数が初期化されていないときに出ます。",
         "配列の要素はインデックスで取り出します。", "{w1}でファイルを読むには、まずファイルを開きます。"}},
       {{"python", "c++", "java", "rust", "javascript"}, {}, {}}},
      {{"animal",
        {"{w1}はどこに住んでいますか", "{w1}は何を食べますか", "{w1}の寿命はどれくらい?", "{w1}について教えて"},
        {"{w1}は{w2}に生息し、主に{w3}を食べます。", "{w1}の寿命は{n}年ほどです。", "野生の{w1}は群れで暮らします。"}},
       {{"ゾウ", "キリン", "ペンギン", "ライオン", "パンダ", "イルカ", "カンガルー"},
        {"草原", "森林", "海", "南極", "山地"},
        {"草", "魚", "竹", "木の葉", "小さな動物"}}},
      {{"sports",
        {"昨日の試合の結果は?", "{w1}は勝ちましたか", "{w2}のルールを教えて", "優勝したのはどこ?"},
        {"{w1}は{w2}の試合で{n}対1で勝ちました。", "{w2}は二つのチームが点を取り合う競技です。", "{w1}が今シーズンの優勝を決めました。"}},
       {{"東京チーム", "大阪ブルーズ", "北海道スターズ", "福岡ホークス", "横浜マリナーズ"}, {"野球", "サッカー", "バスケットボール", "ラグビー"}, {}}},
      {{"shop",
        {"営業時間は何時までですか", "定休日はいつ?", "駐車場はありますか", "{w1}はいくらですか", "お店の場所を教えて"},
        {"当店の営業時間は午前十時から午後{n}時までです。", "定休日は毎週{w2}曜日です。", "{w1}は{n}千円で販売しています。",
         "店の前に五台分の駐車場があります。"}},
       {{"中古カメラ", "自転車", "電子辞書", "ノートパソコン", "腕時計"}, {"月", "火", "水", "木"}, {}}},
      {{"health",
        {"風邪をひいたらどうすればいい?", "熱が下がりません", "よく眠るにはどうしたらいいですか", "頭が痛いときは?"},
        {"熱があるときは水分をとってゆっくり休みましょう。", "{n}日以上熱が続くなら病院を受診してください。",
         "寝る前にスマートフォンを見ないと眠りやすくなります。", "頭痛が続くときは医師に相談しましょう。"}},
       {{}, {}, {}}},
      {{"space",
        {"{w1}はどんな星ですか", "月までの距離は?", "{w1}には水がありますか", "宇宙はどれくらい広い?"},
        {"{w1}は太陽系の惑星の一つです。", "月までの距離はおよそ三十八万キロメートルです。", "{w1}の表面には岩石が広がっています。"}},
       {{"火星", "金星", "木星", "土星", "水星"}, {}, {}}},
      {{"money",
        {"貯金のコツは?", "税金の申告はいつですか", "銀行口座を作るには?"},
        {"毎月の給料から先に貯金する分を分けておきましょう。", "確定申告は毎年二月から三月に行います。",
         "口座を作るには本人確認の書類が必要です。"}},
       {{}, {}, {}}},
      {{"movie",
        {"おすすめの映画は?", "その映画の監督は誰?", "{w1}はいつ公開されましたか"},
        {"{w1}は{n}年に公開された映画です。", "この映画の監督は若手の{w2}です。", "{w1}は家族で楽しめる作品です。"}},
       {{"星の旅", "夏の終わり", "青い港", "雪の街"}, {"山田監督", "林監督", "森監督"}, {}}},
  };
}

struct Pools {
  Words family = {"佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤", "吉田", "山田", "佐々木",
                  "松本", "井上", "木村", "林", "清水", "山口", "森", "池田", "橋本", "石川", "前田", "藤田", "岡田"};
  Words given = {"美咲", "陽菜", "翔太", "健太", "由美", "花子", "太郎", "結衣", "大輔", "真奈", "拓海", "彩", "葵", "蓮",
                 "悠真", "優子", "直樹", "千尋", "恵", "誠", "さくら", "ひかり", "ゆうき", "あおい"};
  Words nick = {"みーちゃん", "ひな", "しょう", "けんちゃん", "ゆみ", "はなちゃん", "たろう", "ゆいちゃん", "だいちゃん", "まな",
                "たっくん", "あーちゃん", "あおちゃん", "れんくん", "ゆうま", "ゆうこ", "なおき", "ちひろ", "めぐ", "まこと"};
  Words place = {"北海道の札幌市", "青森県の八戸市", "秋田県", "岩手県の盛岡市", "福島県の会津若松市", "新潟県の長岡市",
                 "長野県の松本市", "静岡県の浜松市", "愛知県の豊橋市", "京都府の宇治市", "大阪府の堺市", "兵庫県の神戸市",
                 "広島県の尾道市", "香川県の高松市", "福岡県の北九州市", "熊本県", "鹿児島県", "沖縄県の那覇市", "千葉県の銚子市",
                 "富山県", "石川県の金沢市", "山形県", "高知県", "島根県の松江市"};
  Words scene = {"山に囲まれた静かな町です", "冬は雪が多い土地です", "海が見える町です", "田んぼが広がっています",
                 "古いお寺が多い町です", "温泉で有名です"};
  Words home = {"東京の世田谷区", "横浜市", "大阪市", "名古屋市", "さいたま市", "川崎市", "福岡市", "京都市", "神戸市", "千葉市"};
  Words hobby = {"登山", "読書", "料理", "釣り", "写真撮影", "映画鑑賞", "ギター", "ピアノ", "将棋", "園芸", "ジョギング", "水泳",
                 "絵を描くこと", "編み物", "キャンプ", "ゲーム", "書道", "陶芸", "切手集め", "天体観測", "ヨガ", "お菓子作り"};
  Words job = {"看護師", "小学校の教師", "ソフトウェアエンジニア", "図書館の司書", "銀行員", "大学の研究員", "美容師", "料理人",
               "市役所の職員", "会社員", "薬剤師", "デザイナー", "新聞記者", "農家", "保育士", "建築士", "獣医", "通訳"};
  Words food = {"ラーメン", "寿司", "カレーライス", "うどん", "焼き魚", "餃子", "オムライス", "天ぷら", "そば", "いちご",
                "チョコレート", "焼き肉", "たこ焼き", "お好み焼き", "ハンバーグ", "肉まん"};
  Words dislike = {"納豆", "梅干し", "トマト", "ピーマン", "しいたけ", "セロリ", "牛乳", "レバー", "なす", "ゴーヤ"};
  Words subject = {"経済学", "文学", "物理学", "化学", "心理学", "法学", "建築", "情報工学", "生物学", "美術史", "教育学"};
  Words language = {"英語", "中国語", "韓国語", "フランス語", "スペイン語", "ドイツ語"};
  Words music = {"ジャズ", "クラシック", "ロック", "アニメの曲", "演歌", "ボサノバ", "ヒップホップ"};
  Words pet = {"犬", "猫", "うさぎ", "金魚", "インコ", "ハムスター", "カメ"};
  Words petName = {"ポチ", "タマ", "モモ", "ココ", "ソラ", "マロン", "チョコ", "ハナ"};
  Words familyOf = {"両親と兄の四人", "父と母と妹の四人", "祖母と両親と弟の五人", "母と二人", "両親と姉が二人の五人", "夫と娘の三人"};
  Words dream = {"自分の店を開く", "世界一周をする", "本を書く", "海の近くに住む", "大きな畑を作る", "留学する"};
};

uint64_t pick(std::mt19937_64& g, size_t n) { return n == 0 ? 0 : g() % n; }
const std::string& pickOf(std::mt19937_64& g, const Words& w) { return w[pick(g, w.size())]; }


std::string fill(std::string s, const std::map<std::string, std::string>& slots) {
  for (const auto& [k, v] : slots) {
    const std::string key = "{" + k + "}";
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + v.size())) s.replace(at, key.size(), v);
  }
  return s;
}

struct Pair {
  std::string query, passage;
  int topic = 0;
};

class PairMaker {
 public:
  explicit PairMaker(uint64_t seed) : g_(seed) {
    for (auto& t : personaTopics()) topics_.push_back({t, {}});
    persona_ = static_cast<int>(topics_.size());
    for (auto& t : genericTopics()) topics_.push_back(t);
  }
  int topicCount() const { return static_cast<int>(topics_.size()); }
  const std::string& topicName(int i) const { return topics_[static_cast<size_t>(i)].t.name; }

  Pair make(int topic) {
    const GenericTopic& gt = topics_[static_cast<size_t>(topic)];
    std::map<std::string, std::string> slots;
    if (topic < persona_) {
      const Person p = person();
      slots = {{"N", p.family + p.given}, {"F", p.family}, {"G", p.given}, {"K", p.nickname}, {"P", p.hometown},
               {"C", p.home}, {"H", p.hobby}, {"H2", p.hobby2}, {"J", p.job}, {"FD", p.food}, {"DL", p.dislike},
               {"M", std::to_string(p.month)}, {"D", std::to_string(p.day)}, {"A", std::to_string(p.age)},
               {"S", p.subject}, {"L", p.language}, {"U", p.music}, {"X", p.pet}, {"XN", p.petName},
               {"FM", p.family2}, {"DR", p.dream}, {"scene", pickOf(g_, pools_.scene)}};
    } else {
      for (size_t i = 0; i < 3; ++i)
        if (!gt.slots[i].empty()) slots["w" + std::to_string(i + 1)] = pickOf(g_, gt.slots[i]);
      slots["n"] = std::to_string(2 + pick(g_, 40));
    }
    Pair out;
    out.topic = topic;
    out.query = fill(pickOf(g_, gt.t.questions), slots);
    // A passage: one or two of the topic's sentences, sometimes with a sentence of no topic.
    std::string passage = fill(pickOf(g_, gt.t.passages), slots);
    if (pick(g_, 2) == 0) {
      const std::string second = fill(pickOf(g_, gt.t.passages), slots);
      if (second != passage) passage += second;
    }
    static const Words filler = {"よろしくお願いします。", "どうぞよろしく。", "気軽に聞いてください。", "以上です。",
                                 "詳しくはお問い合わせください。", "ありがとうございました。"};
    if (pick(g_, 4) == 0) passage = pick(g_, 2) ? passage + pickOf(g_, filler) : pickOf(g_, filler) + passage;
    out.passage = passage;
    // Question marks, or none, as people type them.
    const int mark = static_cast<int>(pick(g_, 4));
    if (!out.query.empty() && out.query.back() != '?' && out.query.rfind("？") != out.query.size() - 3)
      out.query += mark == 0 ? "?" : mark == 1 ? "？" : "";
    return out;
  }

 private:
  Person person() {
    Person p;
    const size_t gi = pick(g_, pools_.given.size());
    p.family = pickOf(g_, pools_.family);
    p.given = pools_.given[gi];
    p.nickname = gi < pools_.nick.size() ? pools_.nick[gi] : pools_.given[gi] + "ちゃん";
    p.hometown = pickOf(g_, pools_.place);
    p.home = pickOf(g_, pools_.home);
    p.hobby = pickOf(g_, pools_.hobby);
    do p.hobby2 = pickOf(g_, pools_.hobby);
    while (p.hobby2 == p.hobby);
    p.job = pickOf(g_, pools_.job);
    p.food = pickOf(g_, pools_.food);
    p.dislike = pickOf(g_, pools_.dislike);
    p.subject = pickOf(g_, pools_.subject);
    p.language = pickOf(g_, pools_.language);
    p.music = pickOf(g_, pools_.music);
    p.pet = pickOf(g_, pools_.pet);
    p.petName = pickOf(g_, pools_.petName);
    p.family2 = pickOf(g_, pools_.familyOf);
    p.dream = pickOf(g_, pools_.dream);
    p.month = 1 + static_cast<int>(pick(g_, 12));
    p.day = 1 + static_cast<int>(pick(g_, 28));
    p.age = 18 + static_cast<int>(pick(g_, 50));
    return p;
  }

  std::mt19937_64 g_;
  Pools pools_;
  std::vector<GenericTopic> topics_;
  int persona_ = 0;
};

// ---------------------------------------------------------------- the folder

// Code points of a UTF-8 string (the generated text is valid UTF-8).
std::vector<std::string> codePoints(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

uint32_t decode(const std::string& cp) {
  const auto* b = reinterpret_cast<const unsigned char*>(cp.data());
  if (cp.size() == 1) return b[0];
  if (cp.size() == 2) return ((b[0] & 0x1Fu) << 6) | (b[1] & 0x3Fu);
  if (cp.size() == 3) return ((b[0] & 0x0Fu) << 12) | ((b[1] & 0x3Fu) << 6) | (b[2] & 0x3Fu);
  return ((b[0] & 0x07u) << 18) | ((b[1] & 0x3Fu) << 12) | ((b[2] & 0x3Fu) << 6) | (b[3] & 0x3Fu);
}

std::string encodeUtf8(uint32_t c) {
  std::string s;
  if (c < 0x80) s += static_cast<char>(c);
  else if (c < 0x800) s += {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
  else s += {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
  return s;
}

// BertPreTokenizer makes every CJK ideograph a word of its own; other characters (kana, Latin,
// digits) form words that WordPiece cuts into a first piece and "##" pieces.
bool isIdeograph(uint32_t c) { return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0xF900 && c <= 0xFAFF); }

// Vocabulary: specials, then every hiragana, katakana, lower-case ASCII letter, digit and common
// punctuation (a word with one character outside the vocabulary becomes [UNK] whole), then the
// ideographs of the generated text.
std::vector<std::string> makeVocab(const std::set<uint32_t>& ideographs) {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::vector<uint32_t> chars;
  for (uint32_t c = 0x3041; c <= 0x3096; ++c) chars.push_back(c);  // hiragana
  for (uint32_t c = 0x30A1; c <= 0x30FA; ++c) chars.push_back(c);  // katakana
  chars.push_back(0x30FC);                                          // ー
  chars.push_back(0x3005);                                          // 々
  for (uint32_t c = 'a'; c <= 'z'; ++c) chars.push_back(c);
  for (uint32_t c = '0'; c <= '9'; ++c) chars.push_back(c);
  for (uint32_t c : {uint32_t('+'), uint32_t('#'), uint32_t('.')}) chars.push_back(c);
  for (uint32_t c : chars) {
    v.push_back(encodeUtf8(c));
    v.push_back("##" + encodeUtf8(c));
  }
  for (const char* p : {"。", "、", "「", "」", "？", "！", "?", "!", "・", "（", "）", "(", ")", ",", ":", "〜", "『", "』"}) v.push_back(p);
  for (uint32_t c : ideographs) v.push_back(encodeUtf8(c));
  return v;
}

json tokenizerJson(const std::vector<std::string>& vocab) {
  json added = json::array();
  for (int i = 0; i < 5; ++i)
    added.push_back({{"id", i}, {"content", vocab[static_cast<size_t>(i)]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  json v = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true}, {"strip_accents", false}, {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", json::array({{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}},
                                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                    {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}})},
            {"pair", json::array()},
            {"special_tokens",
             {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
              {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}},
          {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
          {"model",
           {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"}, {"max_input_chars_per_word", 100}, {"vocab", v}}}};
}

struct Shape {
  int64_t vocab, hidden = 64, layers = 2, heads = 4, inter = 256, positions = 512;
};

json configJson(const Shape& s) {
  return {{"architectures", {"BertModel"}}, {"model_type", "bert"}, {"vocab_size", s.vocab}, {"hidden_size", s.hidden},
          {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads}, {"intermediate_size", s.inter},
          {"max_position_embeddings", s.positions}, {"type_vocab_size", 2}, {"pad_token_id", 0}, {"layer_norm_eps", 1e-12},
          {"hidden_act", "gelu"}, {"position_embedding_type", "absolute"}, {"torch_dtype", "float32"},
          {"kumihimo", "trained by tests/tools/train_tiny_embedder.cpp on generated pairs; mean pooling, no prefixes"}};
}

// BERT's initialisation: normal(0, 0.02) matrices and embeddings, LayerNorm 1 / 0, biases 0.
std::vector<std::pair<std::string, at::Tensor>> initialWeights(const Shape& s) {
  const int64_t D = s.hidden, I = s.inter;
  auto normal = [](std::vector<int64_t> shape) { return at::randn(shape) * 0.02; };
  std::vector<std::pair<std::string, at::Tensor>> w = {{"embeddings.word_embeddings.weight", normal({s.vocab, D})},
                                                       {"embeddings.position_embeddings.weight", normal({s.positions, D})},
                                                       {"embeddings.token_type_embeddings.weight", normal({2, D})},
                                                       {"embeddings.LayerNorm.weight", at::ones({D})},
                                                       {"embeddings.LayerNorm.bias", at::zeros({D})}};
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    for (const char* m : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
      w.emplace_back(p + m + ".weight", normal({D, D}));
      w.emplace_back(p + m + ".bias", at::zeros({D}));
    }
    w.emplace_back(p + "attention.output.LayerNorm.weight", at::ones({D}));
    w.emplace_back(p + "attention.output.LayerNorm.bias", at::zeros({D}));
    w.emplace_back(p + "intermediate.dense.weight", normal({I, D}));
    w.emplace_back(p + "intermediate.dense.bias", at::zeros({I}));
    w.emplace_back(p + "output.dense.weight", normal({D, I}));
    w.emplace_back(p + "output.dense.bias", at::zeros({D}));
    w.emplace_back(p + "output.LayerNorm.weight", at::ones({D}));
    w.emplace_back(p + "output.LayerNorm.bias", at::zeros({D}));
  }
  return w;
}

void writeFolder(const fs::path& dir, const Shape& s, const std::vector<std::string>& vocab,
                 const std::vector<std::pair<std::string, at::Tensor>>& weights) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << configJson(s).dump(1) << "\n";
  std::ofstream(dir / "tokenizer.json") << tokenizerJson(vocab).dump() << "\n";
  std::vector<std::pair<std::string, at::Tensor>> plain;
  for (const auto& [n, t] : weights) plain.emplace_back(n, t.detach().contiguous().clone());
  kh::saveSafetensors((dir / "model.safetensors").string(), plain);
}

// ---------------------------------------------------------------- training

struct Batch {
  at::Tensor ids, mask;  // [B, T] int64 each
};

Batch pack(const std::vector<std::vector<int>>& rows) {
  size_t T = 1;
  for (const auto& r : rows) T = std::max(T, r.size());
  const int64_t B = static_cast<int64_t>(rows.size());
  at::Tensor ids = at::zeros({B, static_cast<int64_t>(T)}, at::kLong), mask = at::zeros({B, static_cast<int64_t>(T)}, at::kLong);
  auto* pi = ids.data_ptr<int64_t>();
  auto* pm = mask.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (size_t t = 0; t < rows[static_cast<size_t>(b)].size(); ++t) {
      pi[b * static_cast<int64_t>(T) + static_cast<int64_t>(t)] = rows[static_cast<size_t>(b)][t];
      pm[b * static_cast<int64_t>(T) + static_cast<int64_t>(t)] = 1;
    }
  return {ids, mask};
}

// Mean over real tokens, then unit length: what EncoderEmbedder does.
at::Tensor embed(const kh::BertEncoder& enc, const Batch& b) {
  at::Tensor h = enc.forward(b.ids, b.mask);                            // [B, T, D]
  at::Tensor m = b.mask.to(at::kFloat).unsqueeze(-1);                   // [B, T, 1]
  at::Tensor mean = (h * m).sum(1) / m.sum(1).clamp_min(1.0);           // [B, D]
  return mean / mean.norm(2, -1, true).clamp_min(1e-12);                // [B, D] unit rows
}

int usage() {
  std::fprintf(stderr, "usage: train_tiny_embedder -o DIR [--steps N] [--batch N] [--seed N] [--threads N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  int steps = 3000, batch = 64, threads = 2;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "-o") out = next();
    else if (a == "--steps") steps = std::atoi(next().c_str());
    else if (a == "--batch") batch = std::atoi(next().c_str());
    else if (a == "--seed") seed = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else return usage();
  }
  if (out.empty() || steps <= 0 || batch < 2) return usage();
  try {
    at::set_num_threads(threads);
    at::manual_seed(seed);
    PairMaker maker(seed);
    const int topics = maker.topicCount();
    // The characters of a large sample decide the vocabulary.
    std::set<uint32_t> ideographs;
    {
      PairMaker sample(seed + 1000);
      for (int i = 0; i < 40000; ++i) {
        const Pair p = sample.make(i % topics);
        for (const std::string* s : {&p.query, &p.passage})
          for (const auto& cp : codePoints(*s))
            if (isIdeograph(decode(cp))) ideographs.insert(decode(cp));
      }
    }
    const std::vector<std::string> vocab = makeVocab(ideographs);
    Shape shape;
    shape.vocab = static_cast<int64_t>(vocab.size());
    const fs::path partial = fs::path(out).string() + ".partial";
    fs::remove_all(partial);
    writeFolder(partial, shape, vocab, initialWeights(shape));
    auto enc = kh::BertEncoder::load(partial.string());
    auto tok = kh::Tokenizer::fromFolder(partial.string());
    std::vector<at::Tensor> params;
    for (auto& [n, t] : enc->namedWeights()) params.push_back(t.requires_grad_(true));
    std::vector<at::Tensor> m1, m2;
    for (const auto& p : params) {
      m1.push_back(at::zeros_like(p));
      m2.push_back(at::zeros_like(p));
    }
    std::printf("vocabulary %zu (%zu ideographs), %d topics, %lld parameters\n", vocab.size(), ideographs.size(), topics,
                static_cast<long long>([&] {
                  int64_t n = 0;
                  for (const auto& p : params) n += p.numel();
                  return n;
                }()));
    std::mt19937_64 g(seed + 7);
    auto ids = [&](const std::string& s) {
      std::vector<int> v = tok->encode(s, true);
      // 4% of the characters become [UNK] (1), so that characters outside the vocabulary are familiar.
      for (size_t i = 1; i + 1 < v.size(); ++i)
        if (v[i] >= 5 && g() % 100 < 4) v[i] = 1;
      return v;
    };
    const double peakLr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, decay = 0.01, scale = 20.0;  // scale = 1 / temperature
    const int warmup = std::max(1, steps / 20);
    const auto t0 = std::chrono::steady_clock::now();
    double avg = 0;
    for (int step = 1; step <= steps; ++step) {
      std::vector<std::vector<int>> q, p;
      std::vector<int64_t> topic;
      for (int i = 0; i < batch; ++i) {
        const Pair pr = maker.make(static_cast<int>(g() % static_cast<uint64_t>(topics)));
        q.push_back(ids(pr.query));
        p.push_back(ids(pr.passage));
        topic.push_back(pr.topic);
      }
      at::Tensor eq = embed(*enc, pack(q)), ep = embed(*enc, pack(p));  // [B, D] each
      at::Tensor tt = at::tensor(topic, at::kLong);
      // Another pair of the same topic is not a negative: masked out of the softmax.
      at::Tensor same = tt.unsqueeze(0).eq(tt.unsqueeze(1)).logical_and(at::eye(batch, at::kBool).logical_not());
      at::Tensor logits = (at::matmul(eq, ep.t()) * scale).masked_fill(same, -1e4);  // [B, B]
      at::Tensor target = at::arange(batch, at::kLong);
      at::Tensor loss = (at::cross_entropy_loss(logits, target) + at::cross_entropy_loss(logits.t(), target)) * 0.5;
      for (auto& pr : params) pr.mutable_grad() = at::Tensor();
      loss.backward();
      const double lr = step <= warmup ? peakLr * step / warmup
                                       : peakLr * 0.5 * (1 + std::cos(M_PI * double(step - warmup) / double(steps - warmup)));
      {
        at::NoGradGuard ng;
        for (size_t i = 0; i < params.size(); ++i) {
          at::Tensor gr = params[i].grad();
          if (!gr.defined()) continue;
          m1[i].mul_(beta1).add_(gr, 1 - beta1);
          m2[i].mul_(beta2).addcmul_(gr, gr, 1 - beta2);
          const double bc1 = 1 - std::pow(beta1, step), bc2 = 1 - std::pow(beta2, step);
          params[i].mul_(1 - lr * decay);
          params[i].addcdiv_(m1[i] / bc1, (m2[i] / bc2).sqrt_().add_(eps), -lr);
        }
      }
      avg = step == 1 ? loss.item<double>() : 0.98 * avg + 0.02 * loss.item<double>();
      if (step % 200 == 0 || step == steps)
        std::printf("step %5d  loss %.4f  lr %.2e  %.1f s\n", step, avg, lr,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      std::fflush(stdout);
    }
    // Held-out check on fresh pairs: each query against one passage of every topic.
    {
      at::NoGradGuard ng;
      PairMaker fresh(seed + 99);
      int right = 0, total = 0;
      for (int round = 0; round < 20; ++round) {
        std::vector<std::vector<int>> q, p;
        for (int t = 0; t < topics; ++t) {
          const Pair pr = fresh.make(t);
          q.push_back(tok->encode(pr.query, true));
          p.push_back(tok->encode(pr.passage, true));
        }
        at::Tensor s = at::matmul(embed(*enc, pack(q)), embed(*enc, pack(p)).t());  // [topics, topics]
        at::Tensor best = s.argmax(1);
        for (int t = 0; t < topics; ++t) right += best[t].item<int64_t>() == t;
        total += topics;
      }
      std::printf("held-out generated pairs: top-1 topic %.3f (%d of %d)\n", double(right) / total, right, total);
    }
    const fs::path tmp = fs::path(out).string() + ".tmp";
    fs::remove_all(tmp);
    writeFolder(tmp, shape, vocab, enc->namedWeights());
    fs::remove_all(partial);
    fs::remove_all(out);
    fs::rename(tmp, out);
    std::printf("wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_tiny_embedder: %s\n", e.what());
    return 1;
  }
  return 0;
}
