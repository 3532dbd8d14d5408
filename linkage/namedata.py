"""Name, place and variant tables behind the synthetic child population (``linkage.synthetic``).

Pure data, no logic. Every list is written as it would appear on a birth certificate in
England today, accents included (Zoë, Siobhán, José, Łukasz, Müller, Nguyễn), and ordered from
most to least common *within its group*: ``linkage.synthetic`` turns the rank into a long-tailed
(Zipf-Mandelbrot) frequency, so order matters and the first names of a list are the frequent ones.

Names are grouped by cultural background (:class:`NameGroup`) so that a child's given and family
names are plausible together; ``population_share`` is the approximate share of households drawn
from each group. A name may appear in more than one group (Adam, Daniel, Ali).

The variant tables (:data:`NICKNAMES`, :data:`TRANSLITERATIONS`) feed the per-agency errors;
:data:`OUTWARD_CODES` are real postcode districts across England (no inward parts: those are drawn).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NameGroup:
    """Names of one cultural background, each tuple ordered from most to least common."""

    key: str
    population_share: float
    boys: tuple[str, ...]
    girls: tuple[str, ...]
    family: tuple[str, ...]


# The tables are packed several names to a line; the formatter would put one per line.
# fmt: off
BRITISH_IRISH = NameGroup(
    key="british_irish",
    population_share=0.71,
    boys=(
        "Oliver", "Noah", "George", "Arthur", "Leo", "Harry", "Oscar", "Archie", "Henry",
        "Theodore", "Freddie", "Jack", "Charlie", "Theo", "Alfie", "Jacob", "Thomas", "Finley",
        "Arlo", "William", "Lucas", "Roman", "Tommy", "Isaac", "Teddy", "Edward", "Joshua",
        "Reggie", "James", "Jude", "Albie", "Hugo", "Max", "Ethan", "Louie", "Elijah", "Rory",
        "Alexander", "Mason", "Daniel", "Harrison", "Ronnie", "Samuel", "Finn", "Joseph", "Reuben",
        "Sebastian", "Toby", "Jaxon", "Dylan", "Benjamin", "Riley", "Logan", "Ezra", "Ellis",
        "Frankie", "Louis", "Caleb", "Jenson", "Stanley", "Luca", "Adam", "Dexter", "Jesse",
        "Michael", "Bobby", "Ollie", "Grayson", "Jasper", "Ralph", "Elliot", "Harvey", "Nathan",
        "Tyler", "Kai", "Callum", "Liam", "Connor", "Owen", "Ryan", "Matthew", "Christopher",
        "Jamie", "Kyle", "Lewis", "Aaron", "Cameron", "Declan", "Ciarán", "Seán", "Cian", "Oisín",
        "Patrick", "Conor", "Eoin", "Jayden", "Tyrese", "Marcus", "Malachi", "Nathaniel", "Zachary",
        "Gabriel", "Robert", "Stephen", "Andrew", "Peter", "Jonathan", "Luke", "Kieran",
    ),
    girls=(
        "Olivia", "Amelia", "Isla", "Ava", "Lily", "Freya", "Ivy", "Florence", "Mia", "Isabella",
        "Willow", "Evie", "Sophia", "Ella", "Grace", "Elsie", "Rosie", "Poppy", "Sienna", "Emily",
        "Charlotte", "Ruby", "Evelyn", "Daisy", "Harper", "Phoebe", "Ada", "Matilda", "Sophie",
        "Alice", "Maya", "Isabelle", "Millie", "Chloe", "Erin", "Esme", "Hallie", "Maisie",
        "Bonnie", "Ellie", "Layla", "Mila", "Emilia", "Lottie", "Thea", "Ayla", "Georgia", "Eliza",
        "Harriet", "Jessica", "Hannah", "Lucy", "Scarlett", "Molly", "Darcie", "Zoë", "Chloé",
        "Niamh", "Aoife", "Siobhán", "Róisín", "Saoirse", "Ciara", "Orla", "Caoimhe", "Elizabeth",
        "Victoria", "Katie", "Megan", "Lauren", "Holly", "Amber", "Bethany", "Abigail", "Eleanor",
        "Rebecca", "Leah", "Madison", "Paige", "Imogen", "Nevaeh", "Aaliyah", "Tia", "Kayla",
        "Jade", "Amelie", "Violet", "Aurora", "Luna", "Margot", "Edith", "Beatrice", "Penelope",
        "Emma", "Anna", "Sarah", "Rachel", "Natalie", "Renée", "Naomi", "Keira",
    ),
    family=(
        "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
        "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards",
        "Hughes", "Green", "Hall", "Lewis", "Harris", "Clarke", "Jackson", "Wood", "Turner",
        "Martin", "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker",
        "Harrison", "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker",
        "Price", "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter",
        "Richardson", "Bailey", "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox", "Richards",
        "Marshall", "Anderson", "Simpson", "Ellis", "Adams", "Chapman", "Matthews", "Webb", "Hunt",
        "Mason", "Graham", "Palmer", "Rogers", "Gray", "Mills", "Lloyd", "Holmes", "Russell", "Fox",
        "Kennedy", "Murray", "Dixon", "Stevens", "Powell", "Butler", "Barnes", "Wells", "Knight",
        "Foster", "Gibson", "Ross", "Reid", "Hamilton", "Grant", "Lawrence", "Fisher", "Hudson",
        "Hayes", "Owen", "Ryan", "Pearson", "Spencer", "Marsh", "Ford", "Holland", "Rose", "Stone",
        "Andrews", "Saunders", "Berry", "Payne", "Dean", "Cole", "Lane", "Hart", "Hunter", "West",
        "Pearce", "Fletcher", "Gordon", "Howard", "McDonald", "MacDonald", "McCarthy", "McLaughlin",
        "McKenzie", "MacKenzie", "McGregor", "O'Brien", "O'Connor", "O'Neill", "O'Sullivan",
        "O'Reilly", "O'Donnell", "O'Callaghan", "Byrne", "Walsh", "Doyle", "Lynch", "Quinn",
        "Brennan", "Gallagher", "Kavanagh", "Flanagan", "Nolan", "Fitzgerald", "Sullivan",
        "Donnelly", "Burke", "Daly", "Maguire", "Whelan", "Duffy", "Cunningham", "Henderson",
        "Campbell", "Stewart", "Robertson", "Fraser", "Paterson", "Ferguson", "Sinclair",
        "Crawford", "Morrison", "Douglas", "Wallace", "Boyd", "Black", "Davidson", "Houston",
        "Pritchard", "Bowen", "Howells", "Rees", "Jenkins", "Vaughan", "Parry", "Llewellyn",
        "Probert", "Francis", "Henry", "Samuels", "Bryan", "Charles", "Joseph", "Alexander",
        "Benjamin", "Augustine", "Barker", "Barrett", "Bates", "Bishop", "Booth", "Bradley", "Bull",
        "Burgess", "Burton", "Carr", "Chambers", "Cross", "Curtis", "Dawson", "Day", "Dunn",
        "Elliott", "Farmer", "Field", "Fowler", "Frost", "Gardner", "Gibbs", "Gill", "Goodwin",
        "Hardy", "Harper", "Hawkins", "Heath", "Hicks", "Hobbs", "Holt", "Hopkins", "Howe",
        "Hutchinson", "Jarvis", "Jennings", "Johnston", "Kemp", "Kirby", "Lamb", "Lambert",
        "Little", "Lowe", "Lucas", "Manning", "Mann", "Newman", "Newton", "Nicholson", "Norris",
        "Osborne", "Page", "Parsons", "Perkins", "Perry", "Pike", "Potter", "Pugh", "Ray", "Read",
        "Reynolds", "Rhodes", "Rowe", "Sharp", "Simmons", "Slater", "Stephens", "Sutton", "Swift",
        "Tucker", "Walton", "Warren", "Waters", "Watts", "Webster", "Wheeler", "Whitehead",
        "Wilkinson", "Willis", "Woods", "Yates", "Ashworth", "Atkinson", "Barlow", "Brooks",
        "Buckley", "Cartwright", "Crossley", "Dobson", "Dyson", "Entwistle", "Fairclough",
        "Greenwood", "Hargreaves", "Holden", "Horrocks", "Kershaw", "Leach", "Metcalfe", "Ormerod",
        "Pickering", "Ramsbottom", "Sutcliffe", "Thorpe", "Whittaker", "Hodgson", "Heywood",
        "Blackburn", "Brookes", "Coates", "Gledhill", "Haigh", "Lister", "Mellor", "Priestley",
        "Shackleton", "Stansfield", "Tattersall", "Wainwright", "Beaumont", "Cavendish",
        "Courtenay", "Montague", "Percy", "Seymour", "Villiers", "D'Arcy", "Smith-Jones",
        "Taylor-Brown", "Clarke-Williams", "Ward-Thomas", "Hughes-Davies",
    ),
)

SOUTH_ASIAN = NameGroup(
    key="south_asian",
    population_share=0.1,
    boys=(
        "Muhammad", "Mohammed", "Ibrahim", "Yusuf", "Ali", "Musa", "Zakariya", "Ayaan", "Rayyan",
        "Hamza", "Adam", "Zayn", "Arjun", "Aarav", "Vihaan", "Rohan", "Dev", "Krish", "Aryan",
        "Ishaan", "Harpreet", "Gurpreet", "Jaskaran", "Manpreet", "Amir", "Imran", "Bilal", "Usman",
        "Hassan", "Hussain", "Abdullah", "Faisal", "Rahul", "Sahil", "Kabir", "Anish", "Vivek",
    ),
    girls=(
        "Aisha", "Zainab", "Maryam", "Fatima", "Hafsa", "Inaaya", "Aleena", "Amira", "Zara",
        "Hania", "Anaya", "Priya", "Ananya", "Diya", "Saanvi", "Riya", "Aanya", "Kavya", "Ishita",
        "Simran", "Harleen", "Jasleen", "Navneet", "Gurleen", "Amrit", "Sana", "Noor", "Ayesha",
        "Mahnoor", "Khadija", "Nusrat", "Tasnim", "Sadia", "Rukhsana",
    ),
    family=(
        "Khan", "Ahmed", "Begum", "Patel", "Singh", "Kaur", "Hussain", "Ali", "Rahman", "Islam",
        "Akhtar", "Iqbal", "Shah", "Mahmood", "Malik", "Chaudhry", "Choudhury", "Bibi", "Akram",
        "Aslam", "Bashir", "Butt", "Mirza", "Qureshi", "Raza", "Riaz", "Sadiq", "Saleem", "Sheikh",
        "Siddiqui", "Yousaf", "Zaman", "Rashid", "Hassan", "Haque", "Miah", "Uddin", "Hoque",
        "Chowdhury", "Sarkar", "Das", "Sharma", "Gupta", "Kumar", "Mistry", "Joshi", "Mehta",
        "Desai", "Parmar", "Chauhan", "Solanki", "Rana", "Gill", "Sandhu", "Sidhu", "Dhillon",
        "Grewal", "Bains", "Sahota", "Atwal", "Johal", "Bhatti", "Nair", "Pillai", "Menon", "Reddy",
        "Rao", "Iyer", "Krishnan", "Fernandes", "D'Souza", "Perera", "Fernando",
    ),
)

EASTERN_EUROPEAN = NameGroup(
    key="eastern_european",
    population_share=0.06,
    boys=(
        "Jakub", "Szymon", "Filip", "Kacper", "Antoni", "Jan", "Aleksander", "Wojciech", "Mateusz",
        "Łukasz", "Piotr", "Michał", "Dawid", "Bartosz", "Andrei", "Ionut", "Alexandru", "Ștefan",
        "Mihai", "Gabriel", "Darius", "Matei", "Luka", "Mantas", "Lukas", "Dominik", "Nikola",
        "Georgi", "Ivan", "Dmitri",
    ),
    girls=(
        "Zuzanna", "Oliwia", "Julia", "Zofia", "Maja", "Hanna", "Lena", "Alicja", "Wiktoria",
        "Natalia", "Maria", "Ioana", "Andreea", "Elena", "Bianca", "Alexandra", "Sofia", "Daria",
        "Ana", "Gabija", "Emilija", "Ugnė", "Viktorija", "Kateřina", "Tereza", "Petra", "Anastasia",
        "Yana", "Milena",
    ),
    family=(
        "Nowak", "Kowalski", "Kowalska", "Wiśniewski", "Wiśniewska", "Wójcik", "Kowalczyk",
        "Kamiński", "Lewandowski", "Lewandowska", "Zieliński", "Szymański", "Woźniak", "Dąbrowski",
        "Kozłowski", "Jankowski", "Mazur", "Kwiatkowski", "Krawczyk", "Piotrowski", "Grabowski",
        "Nowakowski", "Pawłowski", "Michalski", "Król", "Wieczorek", "Jabłoński", "Wróbel",
        "Majewski", "Olszewski", "Popescu", "Popa", "Pop", "Radu", "Dumitru", "Stan", "Stoica",
        "Gheorghe", "Matei", "Ciobanu", "Rusu", "Munteanu", "Constantin", "Ionescu", "Moldovan",
        "Lungu", "Marin", "Tudor", "Ivanov", "Petrov", "Dimitrov", "Georgiev", "Kazlauskas",
        "Jankauskas", "Petrauskas", "Stankevičius", "Vasiliauskas", "Bērziņš", "Kalniņš", "Ozoliņš",
        "Novák", "Svoboda", "Dvořák", "Horváth", "Nagy", "Tóth", "Szabó", "Kovács", "Kovalenko",
        "Shevchenko", "Bondarenko", "Melnyk",
    ),
)

AFRICAN_CARIBBEAN = NameGroup(
    key="african_caribbean",
    population_share=0.055,
    boys=(
        "David", "Daniel", "Samuel", "Joshua", "Chidi", "Oluwaseun", "Kwame", "Kofi", "Chinedu",
        "Emeka", "Tobi", "Tobiloba", "Ayomide", "Victor", "Ifeanyi", "Obinna", "Kelechi", "Olumide",
        "Adebayo", "Kwabena", "Yaw", "Kojo", "Abdi", "Mohamed", "Abdirahman", "Liban", "Tendai",
        "Tinashe", "Jermaine", "Tyrone", "Dwayne", "Marlon",
    ),
    girls=(
        "Precious", "Blessing", "Favour", "Esther", "Ruth", "Ngozi", "Amara", "Abena", "Adaeze",
        "Chiamaka", "Chioma", "Ifeoma", "Oluwatoyin", "Folake", "Temitope", "Akosua", "Ama", "Efua",
        "Yaa", "Hodan", "Fartun", "Nimco", "Sagal", "Hibaaq", "Tanisha", "Shanice", "Keisha",
        "Latoya", "Imani", "Zuri",
    ),
    family=(
        "Okafor", "Adeyemi", "Mensah", "Okonkwo", "Okoro", "Eze", "Nwosu", "Obi", "Adebayo",
        "Adeleke", "Afolabi", "Akinola", "Babatunde", "Balogun", "Ogunleye", "Olawale", "Oyelaran",
        "Oyewole", "Adewale", "Bello", "Ibrahim", "Abubakar", "Danjuma", "Asante", "Boateng",
        "Owusu", "Osei", "Appiah", "Agyeman", "Darko", "Acheampong", "Ofori", "Addo", "Amoah",
        "Nkrumah", "Abdi", "Mohamed", "Omar", "Warsame", "Farah", "Jama", "Hersi", "Abdullahi",
        "Mwangi", "Ochieng", "Otieno", "Kamau", "Mutua", "Moyo", "Ncube", "Dube", "Banda", "Phiri",
        "Nkosi", "Kamara", "Sesay", "Conteh", "Diallo", "Traoré", "Camara", "Ndiaye", "Mendy",
    ),
)

ARABIC = NameGroup(
    key="arabic",
    population_share=0.025,
    boys=(
        "Omar", "Ahmad", "Khalid", "Mustafa", "Youssef", "Yousef", "Karim", "Tariq", "Sami", "Rami",
        "Hadi", "Nabil", "Majid", "Walid", "Ziad", "Fadi", "Anas", "Idris", "Zaid", "Saif",
    ),
    girls=(
        "Layla", "Mariam", "Nour", "Yasmin", "Rania", "Salma", "Hala", "Lina", "Dina", "Rana",
        "Huda", "Iman", "Amal", "Reem", "Dalia", "Farah", "Jana", "Malak", "Rahaf", "Sara",
    ),
    family=(
        "Al-Sayed", "Al-Hashimi", "El-Masri", "Haddad", "Khalil", "Mansour", "Nasser", "Saleh",
        "Youssef", "Abdullah", "Hamdan", "Jaber", "Aziz", "Karim", "Qasim", "Rahim", "Darwish",
        "Suleiman", "Habib", "Hakim", "Kassem", "Najjar", "Sabbagh", "Shaheen", "Aboud", "Bakr",
        "Fakhoury", "Ghanem", "Issa", "Zaki",
    ),
)

CHINESE = NameGroup(
    key="chinese",
    population_share=0.015,
    boys=(
        "Wei", "Jun", "Hao", "Ming", "Jian", "Tao", "Bo", "Lei", "Yang", "Hui", "Zhihao", "Haoran",
        "Yuxuan", "Zixuan",
    ),
    girls=(
        "Mei", "Ling", "Xinyi", "Yan", "Jing", "Lan", "Qing", "Xiu", "Yu", "Zihan", "Yutong",
        "Ruoxi", "Shu", "Hong",
    ),
    family=(
        "Chen", "Wang", "Li", "Zhang", "Liu", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun",
        "Ma", "Zhu", "Hu", "Lin", "Guo", "He", "Gao", "Luo", "Cheung", "Wong", "Chan", "Leung",
        "Lam", "Ng", "Yip", "Chow", "Tang", "Lau",
    ),
)

VIETNAMESE = NameGroup(
    key="vietnamese",
    population_share=0.005,
    boys=(
        "Minh", "Anh", "Duc", "Hung", "Khoa", "Long", "Nam", "Phuc", "Quang", "Tuan", "Bảo", "Đức",
    ),
    girls=(
        "Linh", "Lan", "Thao", "Trang", "Hoa", "Huong", "Mai", "Ngoc", "Phuong", "Thuy", "Vy",
        "Hằng",
    ),
    family=(
        "Nguyễn", "Nguyen", "Trần", "Tran", "Lê", "Le", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ",
        "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý",
    ),
)

SOUTHERN_WESTERN_EUROPEAN_TURKISH = NameGroup(
    key="southern_western_european_turkish",
    population_share=0.03,
    boys=(
        "José", "Luís", "João", "Tiago", "Rafael", "Diogo", "Mehmet", "Emre", "Can", "Deniz",
        "Burak", "Marco", "Giuseppe", "Alessandro", "Nikos", "Yiannis", "Dimitri",
    ),
    girls=(
        "Beatriz", "Inês", "Mariana", "Leonor", "Elif", "Zeynep", "Defne", "Ecem", "Ayşe", "Giulia",
        "Chiara", "Francesca", "Eleni", "Sofía",
    ),
    family=(
        "Silva", "Santos", "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues", "Martins",
        "Sousa", "Gonçalves", "Fernández", "García", "López", "Martínez", "Rossi", "Russo",
        "Ferrari", "Esposito", "Bianchi", "Romano", "Ricci", "Conti", "De Luca", "Papadopoulos",
        "Georgiou", "Christodoulou", "Constantinou", "Yilmaz", "Yılmaz", "Kaya", "Demir", "Şahin",
        "Çelik", "Öztürk", "Aydın", "Arslan", "Doğan", "Müller", "Schmidt", "Schneider", "Fischer",
        "Weber", "van der Berg", "van Dijk", "de Vries", "de Jong", "Jansen", "Bakker", "Janssen",
        "Visser", "Dubois", "Lefèvre", "Moreau",
    ),
)

NAME_GROUPS: tuple[NameGroup, ...] = (
    BRITISH_IRISH,
    SOUTH_ASIAN,
    EASTERN_EUROPEAN,
    AFRICAN_CARIBBEAN,
    ARABIC,
    CHINESE,
    VIETNAMESE,
    SOUTHERN_WESTERN_EUROPEAN_TURKISH,
)

# Formal given name -> the short forms a child is commonly recorded under.
NICKNAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("William", ("Will", "Bill", "Billy", "Liam")),
    ("Alexander", ("Alex", "Sasha", "Xander", "Al")),
    ("Aleksander", ("Olek", "Alek", "Aleks")),
    ("Alexandra", ("Alex", "Sasha", "Lexi")),
    ("Elizabeth", ("Beth", "Lizzie", "Liz", "Eliza", "Betty")),
    ("Muhammad", ("Mo",)),
    ("Mohammed", ("Mo",)),
    ("Mohamed", ("Mo",)),
    ("Oliver", ("Ollie", "Olly")),
    ("Thomas", ("Tom", "Tommy")),
    ("James", ("Jim", "Jimmy", "Jamie")),
    ("Jacob", ("Jake",)),
    ("Joseph", ("Joe", "Joey")),
    ("Benjamin", ("Ben", "Benny")),
    ("Samuel", ("Sam", "Sammy")),
    ("Daniel", ("Dan", "Danny")),
    ("Matthew", ("Matt",)),
    ("Christopher", ("Chris",)),
    ("Jonathan", ("Jon", "Jonny")),
    ("Nathaniel", ("Nate", "Nat")),
    ("Nathan", ("Nate",)),
    ("Robert", ("Rob", "Bob", "Bobby")),
    ("Edward", ("Ed", "Eddie", "Ted", "Teddy")),
    ("Henry", ("Harry", "Hal")),
    ("Theodore", ("Theo", "Teddy")),
    ("Zachary", ("Zach", "Zac")),
    ("Harrison", ("Harry",)),
    ("Michael", ("Mike", "Mikey")),
    ("Andrew", ("Andy", "Drew")),
    ("Peter", ("Pete",)),
    ("Stephen", ("Steve",)),
    ("Patrick", ("Pat", "Paddy")),
    ("Sebastian", ("Seb",)),
    ("Gabriel", ("Gabe",)),
    ("Joshua", ("Josh",)),
    ("Frankie", ("Frank",)),
    ("Charlotte", ("Charlie", "Lottie")),
    ("Olivia", ("Liv", "Livvy")),
    ("Isabella", ("Bella", "Izzy")),
    ("Isabelle", ("Izzy", "Belle")),
    ("Amelia", ("Millie", "Mia")),
    ("Emily", ("Em", "Emmy")),
    ("Victoria", ("Vicky", "Tori")),
    ("Jessica", ("Jess", "Jessie")),
    ("Rebecca", ("Becky", "Becca")),
    ("Abigail", ("Abby", "Gail")),
    ("Eleanor", ("Ellie", "Nell")),
    ("Natalie", ("Nat",)),
    ("Penelope", ("Penny",)),
    ("Beatrice", ("Bea",)),
    ("Matilda", ("Tilly", "Tilda")),
    ("Florence", ("Flo", "Florrie")),
    ("Harriet", ("Hattie",)),
    ("Imogen", ("Immy",)),
    ("Georgia", ("Georgie",)),
    ("Sophia", ("Soph",)),
    ("Sophie", ("Soph",)),
    ("Jakub", ("Kuba",)),
    ("Wojciech", ("Wojtek",)),
    ("Zuzanna", ("Zuzia",)),
    ("Oluwaseun", ("Seun",)),
    ("Oluwatoyin", ("Toyin",)),
    ("Tobiloba", ("Tobi",)),
    ("Chiamaka", ("Amaka",)),
    ("Abdirahman", ("Abdi",)),
    ("Ibrahim", ("Ibby",)),
    ("Ayomide", ("Ayo",)),
    ("Temitope", ("Temi",)),
    ("Adaeze", ("Ada",)),
    ("Abdullah", ("Abdul",)),
)

# Groups of spellings of one name: an agency may record any member for any other.
TRANSLITERATIONS: tuple[tuple[str, ...], ...] = (
    ("Muhammad", "Mohammed", "Mohammad", "Mohamed", "Muhammed"),
    ("Aleksander", "Alexander", "Aleksandr"),
    ("Yusuf", "Yousef", "Youssef", "Yousuf", "Yusef"),
    ("Fatima", "Fatimah", "Fatma"),
    ("Aisha", "Ayesha", "Aysha", "Aishah"),
    ("Zainab", "Zaynab", "Zeinab"),
    ("Maryam", "Mariam", "Meryem"),
    ("Hussain", "Hussein", "Husain", "Hossain"),
    ("Hassan", "Hasan"),
    ("Ahmed", "Ahmad", "Ahmet"),
    ("Omar", "Umar", "Omer"),
    ("Khadija", "Khadijah"),
    ("Ibrahim", "Ebrahim", "Ibraheem"),
    ("Abdullah", "Abdulla", "Abdallah"),
    ("Zakariya", "Zakaria", "Zakariyya"),
    ("Rayyan", "Rayan"),
    ("Amir", "Ameer"),
    ("Layla", "Leila", "Laila"),
    ("Nour", "Noor", "Nur"),
    ("Yasmin", "Yasmine"),
    ("Andrei", "Andrey"),
    ("Dmitri", "Dmitry"),
    ("Julia", "Yulia"),
    ("Wiktoria", "Viktoria", "Viktorija"),
    ("Anastasia", "Anastasiya"),
    ("Zofia", "Sofia"),
    ("Chowdhury", "Choudhury", "Chaudhry", "Chaudhary"),
    ("Rahman", "Rehman"),
    ("Mahmood", "Mahmud", "Mehmood"),
    ("Siddiqui", "Siddiqi"),
    ("Hoque", "Haque", "Huq"),
    ("Miah", "Meah"),
    ("Abdi", "Abdy"),
    ("Yousaf", "Yusaf"),
    ("Mohamed", "Mohammed", "Muhammad"),
    ("Oluwaseun", "Oluseun"),
    ("Ionut", "Ionuț"),
    ("Ștefan", "Stefan", "Ştefan"),
    ("Yilmaz", "Yılmaz"),
    ("Nguyễn", "Nguyen"),
    ("Trần", "Tran"),
    ("Cheung", "Zhang"),
    ("Wong", "Huang"),
    ("Chan", "Chen"),
)

# Real postcode districts (outward codes) in England, from every region.
OUTWARD_CODES: tuple[str, ...] = (
    # London and its outer boroughs
    "E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9", "E10", "E11", "E12", "E13", "E14", "E15",
    "E16", "E17", "N1", "N4", "N7", "N8", "N9", "N11", "N15", "N16", "N17", "N18", "N19", "N22",
    "NW1", "NW2", "NW5", "NW6", "NW9", "NW10", "SE1", "SE5", "SE6", "SE8", "SE9", "SE13", "SE15",
    "SE18", "SE22", "SE25", "SE28", "SW2", "SW4", "SW6", "SW8", "SW9", "SW11", "SW16", "SW17",
    "SW19", "W2", "W3", "W5", "W6", "W10", "W12", "CR0", "CR2", "CR4", "CR7", "BR1", "BR3", "BR6",
    "HA0", "HA1", "HA8", "UB1", "UB3", "UB8", "EN1", "EN3", "IG1", "IG3", "IG11", "RM1", "RM8",
    "RM10", "DA1", "DA8", "SM1", "TW3", "TW13", "KT1",
    # West Midlands
    "B5", "B6", "B8", "B9", "B10", "B11", "B12", "B13", "B16", "B19", "B20", "B21", "B23", "B27",
    "B31", "B33", "B36", "B44", "WV1", "WV10", "WS1", "WS2", "DY1", "DY4", "CV1", "CV2", "CV6",
    "WR1", "HR1", "ST1", "ST4", "ST6", "TF1", "SY1",
    # North West
    "M1", "M8", "M9", "M11", "M12", "M13", "M14", "M15", "M16", "M18", "M19", "M22", "M40", "L4",
    "L5", "L6", "L8", "L11", "L13", "L15", "L20", "L36", "SK1", "SK5", "OL1", "OL8", "OL11", "BL1",
    "BL3", "BB1", "BB2", "BB9", "PR1", "PR8", "WN1", "WN5", "WA1", "WA5", "CH1", "CW1", "LA1",
    "LA4", "CA1", "CA2",
    # Yorkshire and the North East
    "LS2", "LS6", "LS7", "LS8", "LS9", "LS11", "LS12", "LS14", "BD1", "BD3", "BD5", "BD7", "BD8",
    "BD9", "HD1", "HD2", "HX1", "WF1", "WF10", "WF13", "S2", "S3", "S5", "S8", "S9", "S11", "DN1",
    "DN4", "DN31", "HU3", "HU5", "HU9", "YO1", "YO10", "YO24", "HG1", "NE1", "NE4", "NE6", "NE15",
    "NE29", "NE33", "SR1", "SR5", "DH1", "DL1", "TS1", "TS3", "TS24",
    # East Midlands and the East of England
    "NG1", "NG2", "NG3", "NG5", "NG7", "NG9", "LE1", "LE2", "LE3", "LE4", "LE5", "LE11", "DE1",
    "DE22", "DE23", "LN1", "LN2", "NN1", "NN2", "PE1", "PE2", "PE13", "NR1", "NR2", "NR3", "IP1",
    "IP4", "CB1", "CB4", "CO1", "CO4", "CM1", "CM20", "SS1", "SS14", "LU1", "LU2", "LU4", "MK1",
    "MK9", "MK41", "AL1", "WD17", "WD24", "HP1", "HP13", "SG1",
    # South East and South West
    "RG1", "RG2", "RG30", "OX1", "OX4", "SL1", "SL2", "GU1", "GU14", "RH1", "RH10", "BN1", "BN2",
    "BN21", "TN1", "TN34", "ME1", "ME7", "CT1", "CT9", "SO14", "SO15", "SO16", "PO1", "PO4", "BH1",
    "BH8", "SP1", "SN1", "SN2", "BS1", "BS2", "BS3", "BS5", "BS13", "BA1", "GL1", "GL4", "TA1",
    "EX1", "EX4", "PL1", "PL5", "TR1", "TQ1", "DT1",
)
# fmt: on
